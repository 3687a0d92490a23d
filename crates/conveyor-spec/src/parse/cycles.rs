//! Cycles in the `needs` graph of jobs.

/// Every distinct elementary cycle met by a depth-first search, each rotated to start at its
/// earliest job (in file order). Iterative, so a long chain of jobs cannot overflow the stack.
pub(super) fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; edges.len()];
    let mut found: Vec<Vec<usize>> = Vec::new();
    for root in 0..edges.len() {
        if color[root] != Color::White {
            continue;
        }
        color[root] = Color::Grey;
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let Some(&to) = edges[node].get(next) else {
                color[node] = Color::Black;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match color[to] {
                Color::White => {
                    color[to] = Color::Grey;
                    stack.push((to, 0));
                }
                Color::Grey => {
                    let start = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[start..].iter().map(|(n, _)| *n).collect();
                    let min_at = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min_at);
                    if !found.contains(&cycle) {
                        found.push(cycle);
                    }
                }
                Color::Black => {}
            }
        }
    }
    found
}

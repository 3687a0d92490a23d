//! Where in a flag definition something is, printed the way people read JSON:
//! `flags.new-welcome.targeting.if[0]`, with `["odd.key"]` for keys that need quoting.

use std::fmt;

#[derive(Debug, Clone, Default)]
pub(crate) struct JsonPath(Vec<Segment>);

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl JsonPath {
    pub fn root() -> JsonPath {
        JsonPath(Vec::new())
    }

    pub fn key(mut self, key: &str) -> JsonPath {
        self.push_key(key);
        self
    }

    pub fn push_key(&mut self, key: &str) {
        self.0.push(Segment::Key(key.to_owned()));
    }

    pub fn push_index(&mut self, index: usize) {
        self.0.push(Segment::Index(index));
    }

    pub fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if plain(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    write!(f, "[{}]", serde_json::Value::String(key.clone()))?;
                }
            }
        }
        Ok(())
    }
}

fn plain(key: &str) -> bool {
    !key.is_empty()
        && key.chars().all(|c| {
            c.is_alphanumeric()
                || matches!(
                    c,
                    '-' | '_' | '$' | '!' | '=' | '<' | '>' | '?' | ':' | '+' | '*' | '/' | '%' | '~' | '^'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::JsonPath;

    #[test]
    fn renders_keys_indexes_and_quoted_keys() {
        let mut path = JsonPath::root().key("flags").key("new-welcome").key("targeting");
        path.push_key("if");
        path.push_index(0);
        assert_eq!(path.to_string(), "flags.new-welcome.targeting.if[0]");
        let odd = JsonPath::root().key("flags").key("a.b c");
        assert_eq!(odd.to_string(), r#"flags["a.b c"]"#);
        assert_eq!(JsonPath::root().to_string(), "");
    }
}

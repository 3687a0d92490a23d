//! Prometheus as a canary-analysis source: the query's placeholders filled in for the versions
//! compared, an instant query, and its answer read as one value (or none).

use std::time::Duration;

use conveyor_spec::delivery::PrometheusQuery;
use serde_json::Value;

use super::Subjects;

/// A Prometheus answer larger than this is refused (a query should return one series).
const MAX_PROMETHEUS_BODY: usize = 1 << 20;

/// `{{version}}` and friends; an unknown name (refused by `conveyor validate`) stays as written.
pub(crate) fn fill_placeholders(query: &str, subjects: &Subjects) -> String {
    conveyor_spec::delivery::fill_placeholders(query, |name| {
        Some(match name {
            "version" => subjects.canary.clone(),
            "baseline" => subjects.baseline.clone(),
            "project" => subjects.project.clone(),
            "environment" => subjects.environment.clone(),
            _ => return None,
        })
    })
}

/// Why a Prometheus query gave no value to judge.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueryError {
    #[error("{url}: {error}")]
    Http { url: String, error: reqwest::Error },
    #[error("{url}: answer larger than {MAX_PROMETHEUS_BODY} bytes")]
    TooLarge { url: String },
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

/// What is wrong with an answer Prometheus gave.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("not a Prometheus answer: {0}")]
    NotJson(String),
    #[error("Prometheus answered {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("the query returned {0} series; aggregate it to one (e.g. sum(...))")]
    ManySeries(usize),
    #[error("vector result is not a list")]
    NotAList,
    #[error("unsupported result type {0}; expected a vector or a scalar")]
    ResultType(String),
    #[error("sample has no value")]
    NoValue,
    #[error("sample value '{0}' is not a number")]
    NotANumber(String),
}

/// Runs an instant query; `Ok(None)` when it returns no series or NaN.
pub(super) async fn query_value(
    http: &reqwest::Client,
    spec: &PrometheusQuery,
    query: &str,
    timeout: Duration,
) -> Result<Option<f64>, QueryError> {
    let url = format!("{}/api/v1/query", spec.address);
    let failed = |error| QueryError::Http {
        url: url.clone(),
        error,
    };
    let response = http
        .get(&url)
        .query(&[("query", query)])
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    let body = response.bytes().await.map_err(failed)?;
    if body.len() > MAX_PROMETHEUS_BODY {
        return Err(QueryError::TooLarge { url });
    }
    Ok(parse_query_answer(status.as_u16(), &body)?)
}

/// The one value of a Prometheus instant-query answer (`vector` of one series, or `scalar`).
pub(crate) fn parse_query_answer(status: u16, body: &[u8]) -> Result<Option<f64>, AnswerError> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| AnswerError::NotJson(e.to_string()))?;
    if answer["status"] != "success" {
        let error = answer["error"].as_str().unwrap_or("no error message").to_string();
        return Err(AnswerError::Refused { status, error });
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([]) => return Ok(None),
            Some([series]) => &series["value"],
            Some(many) => return Err(AnswerError::ManySeries(many.len())),
            None => return Err(AnswerError::NotAList),
        },
        other => return Err(AnswerError::ResultType(format!("{other:?}"))),
    };
    let text = sample[1].as_str().ok_or(AnswerError::NoValue)?;
    let value: f64 = text
        .parse()
        .map_err(|_| AnswerError::NotANumber(text.to_string()))?;
    Ok(value.is_finite().then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects {
        Subjects {
            project: "shop".into(),
            environment: "production".into(),
            canary: "r7".into(),
            baseline: "r6".into(),
        }
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_kept() {
        let query = r#"sum(rate(http_errors{version="{{ version }}",env="{{environment}}"}[1m])) / {{baseline}} {{nope}}"#;
        assert_eq!(
            fill_placeholders(query, &subjects()),
            r#"sum(rate(http_errors{version="r7",env="production"}[1m])) / r6 {{nope}}"#
        );
    }

    #[test]
    fn prometheus_answers_table() {
        let vector = |result: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
        };
        let cases: Vec<(String, Result<Option<f64>, &str>)> = vec![
            (
                vector(r#"[{"metric":{},"value":[1700000000.1,"0.25"]}]"#),
                Ok(Some(0.25)),
            ),
            (vector("[]"), Ok(None)),
            (vector(r#"[{"metric":{},"value":[1,"NaN"]}]"#), Ok(None)),
            (
                vector(r#"[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]"#),
                Err("the query returned 2 series; aggregate it to one (e.g. sum(...))"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#.into(),
                Ok(Some(3.0)),
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#.into(),
                Err("Prometheus answered 400: parse error at char 4"),
            ),
        ];
        for (body, want) in cases {
            let got = parse_query_answer(400, body.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(String::from), "{body}");
        }
    }
}

//! `?limit=&after=` of the paged answers (`GET /v1/resync/errors`, the refs of
//! `GET /v1/blocks/{hash}/info`): at most [`MAX_PAGE`] items per answer, [`DEFAULT_PAGE`]
//! when `limit` is not given; the answer's `next` is the `after` of the next page (null
//! on the last one), so no answer grows with the table behind it.

use serde::Deserialize;

use super::ApiError;

/// Items per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// Most items one page may ask for.
pub const MAX_PAGE: usize = 1000;

/// The query of a paged route; any other parameter is refused (400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<u64>,
    pub(crate) after: Option<String>,
}

impl PageQuery {
    /// The page size asked for, checked.
    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE as u64).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit {n} is out of range: give 1 to {MAX_PAGE}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_range_checked() {
        let q = |limit| PageQuery { limit, after: None };
        assert_eq!(q(None).limit().unwrap(), DEFAULT_PAGE);
        assert_eq!(q(Some(1)).limit().unwrap(), 1);
        assert_eq!(q(Some(1000)).limit().unwrap(), 1000);
        for bad in [0, 1001, u64::MAX] {
            let e = q(Some(bad)).limit().unwrap_err();
            assert!(e.message.contains("1 to 1000"), "{}", e.message);
        }
    }
}

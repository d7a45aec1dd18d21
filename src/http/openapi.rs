//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! attributes in [`crate::http`] and served at `GET /v1/openapi.json`. A test checks that
//! every route `http::configure` registers is in it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http::{self, admin, blocks, layout, page, tokens};

/// Every error's body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong, for people.
    error: String,
    /// A stable machine code: `bad_request`, `unauthorized`, `not_found`, `no_route`,
    /// `too_large`, `body_timeout`, `range_not_satisfiable`, `ref_dropped`,
    /// `quorum_failed`, `unavailable`, `disk_full`, `repair_refused`, `scrub_refused`,
    /// `internal`.
    code: String,
}

/// The answer of `PUT /v1/blocks`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PutReply {
    /// The block's name: 64 lowercase hex digits.
    hash: String,
    /// Its plain length in bytes.
    size: u64,
}

/// Declares the bearer token every route but the open ones needs.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "blocknode", description = "A replicated, content-addressed block store: HTTP API."),
    paths(
        http::health, http::openapi_json, http::metrics::metrics, blocks::put_block,
        blocks::get_block, blocks::head_block, blocks::block_info, blocks::add_ref,
        blocks::drop_ref, admin::status, admin::resync_errors, admin::resync_retry,
        admin::repair, admin::anti_entropy_sync, admin::scrub, admin::get_workers,
        admin::put_workers, page::status_page, tokens::create_token, tokens::list_tokens,
        tokens::revoke_token, layout::get_layout, layout::stage, layout::apply, layout::revert,
    ),
    components(schemas(
        ErrorBody, PutReply, admin::Workers, admin::RetryBody, admin::RepairBody,
        tokens::CreateBody, tokens::CreatedView, tokens::TokenList, tokens::TokenView,
        layout::StageBody, layout::ApplyBody,
    )),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
struct ApiDoc;

/// The document, built from the code.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every route `http::configure` registers, read from its source:
    /// a route added there without a `#[utoipa::path]` (and an entry in `paths(...)`)
    /// fails the test below.
    fn registered_routes() -> Vec<(String, String)> {
        let src = include_str!("mod.rs");
        let start = src
            .find("pub fn configure(")
            .expect("http/mod.rs has configure");
        let body = &src[start..start + src[start..].find("\n}\n").expect("end of configure")];
        // rustfmt may break a route over lines: read it with the whitespace taken out.
        let body: String = body.split_whitespace().collect();
        body.match_indices(".route(\"")
            .map(|(i, m)| {
                let rest = &body[i + m.len()..];
                let path = &rest[..rest.find('"').expect("closing quote")];
                let method = rest
                    .split("web::")
                    .nth(1)
                    .and_then(|r| r.split("()").next())
                    .expect("a web::METHOD() after the path");
                (method.to_string(), path.to_string())
            })
            .collect()
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        assert_eq!(doc["openapi"], "3.1.0");
        let routes = registered_routes();
        assert!(routes.len() >= 17, "routes read from configure: {routes:?}");
        for (method, path) in routes {
            assert!(
                doc["paths"][&path][&method].is_object(),
                "route {} {path} is registered but missing from the OpenAPI document",
                method.to_uppercase()
            );
        }
    }

    #[test]
    fn the_open_routes_need_no_token_and_the_others_do() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        assert_eq!(doc["security"], serde_json::json!([{"token": []}]));
        for path in ["/", "/health", "/v1/openapi.json"] {
            assert_eq!(
                doc["paths"][path]["get"]["security"],
                serde_json::json!([{}]),
                "{path}"
            );
        }
    }
}

//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! attributes in [`crate::http`] and served at `GET /v1/openapi.json`. A test checks that
//! every route `http::configure` registers is in it.

use actix_web::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use blocknode_actors::tokens::Scope;

use crate::http::schema::{BlockBytes, ErrorBody, ErrorCode, PutReply};
use crate::http::{self, admin, blocks, layout, objects, page, tokens};

/// The answer of `GET /v1/openapi.json`, described at its top level (what is inside is
/// OpenAPI 3.1's own schema). Only a schema: the route sends [`document`].
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct OpenApiDocument {
    /// The OpenAPI version: 3.1.
    #[schema(pattern = "^3\\.1\\.")]
    openapi: String,
    #[schema(value_type = Object)]
    info: serde_json::Value,
    /// Every route, by path then method.
    #[schema(value_type = Object)]
    paths: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    components: Option<serde_json::Value>,
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

/// Adds the answers every route with a token can give, so the handlers' attributes
/// list only their own: 401 and 403 from [`super::require_token`], 503 `not_in_layout`
/// on the block routes of a node no layout names yet, and on the routes that read a
/// JSON body, 400 (unreadable) and 413 (over the JSON limit).
struct CommonResponses;

/// An error answer with the [`ErrorBody`] schema (no body for `HEAD`).
fn error_response(method: &Method, description: &str) -> utoipa::openapi::Response {
    let resp = ResponseBuilder::new().description(description);
    if *method == Method::HEAD {
        return resp.build();
    }
    resp.content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
    .build()
}

fn add_response(op: &mut Operation, method: &Method, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(method, description).into());
}

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // `PUT /v1/blocks` and `PUT /v1/objects` with no body store the empty block or
        // object (0 bytes are valid), so their body is not required.
        for path in ["/v1/blocks", "/v1/objects"] {
            let put = doc.paths.paths.get_mut(path).and_then(|p| p.put.as_mut());
            if let Some(body) = put.and_then(|op| op.request_body.as_mut()) {
                body.required = Some(Required::False);
            }
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::HEAD, &mut item.head),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let open = op.security.as_ref().is_some_and(|s| {
                    serde_json::to_value(s).is_ok_and(|v| v == serde_json::json!([{}]))
                });
                if open {
                    continue;
                }
                add_response(
                    op,
                    &method,
                    "401",
                    "missing or invalid token (code `unauthorized`)",
                );
                if super::needed_scope(&method, path) != Scope::Read {
                    // Every token has at least the read scope.
                    add_response(
                        op,
                        &method,
                        "403",
                        "the token's scope does not cover this route (code `forbidden`)",
                    );
                }
                if path.starts_with("/v1/blocks") || path.starts_with("/v1/objects") {
                    add_response(
                        op,
                        &method,
                        "503",
                        "unavailable, quorum failed or this node is not in the layout yet",
                    );
                }
                if op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"))
                {
                    add_response(
                        op,
                        &method,
                        "400",
                        "malformed JSON body (code `bad_request`)",
                    );
                    add_response(
                        op,
                        &method,
                        "413",
                        "JSON body over the limit (code `too_large`)",
                    );
                }
            }
        }
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
        objects::put_object, objects::get_object, objects::head_object, objects::object_info,
        objects::add_object_ref, objects::drop_object_ref, objects::missing_blocks,
    ),
    components(schemas(
        ErrorBody, ErrorCode, PutReply, BlockBytes, admin::Workers, admin::RetryBody, admin::RepairBody,
        tokens::CreateBody, tokens::CreatedView, tokens::TokenList, tokens::TokenView,
        layout::StageBody, layout::ApplyBody, crate::objects::PutObjectReply,
        crate::objects::ObjectInfo, objects::MissingQuery, objects::MissingReply,
    )),
    modifiers(&BearerToken, &CommonResponses),
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

    /// Every answer but 204, 304 and those to `HEAD` has a body, so each must say what
    /// it is: a content type with a schema (an error's is `ErrorBody`).
    #[test]
    fn every_answer_with_a_body_has_a_schema() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        let paths = doc["paths"].as_object().expect("paths");
        let mut json_answers = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path} documents no answer");
                for (status, resp) in responses {
                    let what = format!("{} {path} → {status}", method.to_uppercase());
                    if method == "head" || status == "204" || status == "304" {
                        assert!(resp.get("content").is_none(), "{what} has no body");
                        continue;
                    }
                    let content = resp["content"]
                        .as_object()
                        .unwrap_or_else(|| panic!("{what}: no content type documented"));
                    for (ctype, media) in content {
                        assert!(
                            media["schema"].is_object(),
                            "{what} ({ctype}) has no schema"
                        );
                        json_answers += usize::from(ctype == "application/json");
                    }
                    if !status.starts_with('2') {
                        assert_eq!(
                            content["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{what}: errors answer ErrorBody"
                        );
                    }
                }
                let json_ok = responses.iter().any(|(status, r)| {
                    status.starts_with('2')
                        && r["content"]["application/json"]["schema"].is_object()
                });
                let not_json = matches!(
                    (method.as_str(), path.as_str()),
                    (
                        "get",
                        "/" | "/metrics" | "/v1/blocks/{hash}" | "/v1/objects/{id}"
                    )
                ) || method == "head"
                    || responses.keys().any(|s| s == "204");
                assert!(
                    json_ok || not_json,
                    "{} {path}: no success answer with a JSON schema",
                    method.to_uppercase()
                );
            }
        }
        assert!(
            json_answers > 50,
            "only {json_answers} JSON answers documented"
        );
    }

    /// The `code`s the HTTP sources give: the string after `StatusCode::X,` and after
    /// `code:` (whitespace taken out, so rustfmt's line breaks do not matter).
    fn codes_in_sources() -> Vec<String> {
        let sources = [
            include_str!("mod.rs"),
            include_str!("admin.rs"),
            include_str!("blocks.rs"),
            include_str!("layout.rs"),
            include_str!("tokens.rs"),
            include_str!("metrics.rs"),
            include_str!("page.rs"),
            include_str!("conditional.rs"),
            include_str!("objects.rs"),
        ];
        let mut codes = Vec::new();
        for src in sources {
            // The code, not its tests (which name codes in assertions).
            let src = src.split("#[cfg(test)]").next().unwrap_or(src);
            let src: String = src.split_whitespace().collect();
            for piece in src.split("StatusCode::").skip(1) {
                let rest = piece.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
                if let Some(lit) = rest.strip_prefix(",\"") {
                    codes.push(lit[..lit.find('"').expect("closing quote")].to_string());
                }
            }
            for piece in src.split("code:\"").skip(1) {
                codes.push(piece[..piece.find('"').expect("closing quote")].to_string());
            }
        }
        codes
    }

    #[test]
    fn every_error_code_the_handlers_give_is_in_the_document() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        let schema = &doc["components"]["schemas"]["ErrorCode"];
        let mut listed: Vec<String> = Vec::new();
        let mut collect = |v: &serde_json::Value| {
            for c in v["enum"].as_array().into_iter().flatten() {
                listed.push(c.as_str().expect("a string code").to_string());
            }
        };
        collect(schema);
        for one in schema["oneOf"].as_array().into_iter().flatten() {
            collect(one);
        }
        let used = codes_in_sources();
        assert!(used.len() >= 15, "codes read from the sources: {used:?}");
        for code in &used {
            assert!(
                listed.contains(code),
                "code {code:?} is answered but not in the ErrorCode schema {listed:?}"
            );
        }
        let error_body = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(
            error_body["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }

    /// The example hash of the block routes (the fuzzer's examples phase asks for it;
    /// `.ci/contract` stores that block first).
    const EXAMPLE_HASH: &str = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419";

    #[test]
    fn the_example_hash_is_the_empty_block() {
        assert_eq!(
            blocknode_actors::hash::blake2sum(b"").to_hex(),
            EXAMPLE_HASH
        );
    }

    #[test]
    fn block_hashes_are_described_with_their_pattern() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        for (path, method) in [
            ("/v1/blocks/{hash}", "get"),
            ("/v1/blocks/{hash}", "head"),
            ("/v1/blocks/{hash}/info", "get"),
            ("/v1/blocks/{hash}/refs/{ref}", "put"),
            ("/v1/blocks/{hash}/refs/{ref}", "delete"),
        ] {
            let params = doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has parameters"));
            let hash = params
                .iter()
                .find(|p| p["name"] == "hash")
                .unwrap_or_else(|| panic!("{method} {path} has a hash parameter"));
            assert_eq!(hash["in"], "path");
            assert_eq!(
                hash["schema"]["pattern"], "^[0-9a-f]{64}$",
                "{method} {path}"
            );
        }
    }

    #[test]
    fn paged_answers_document_limit_after_and_next() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        for (path, next_in) in [
            ("/v1/resync/errors", "ResyncErrors"),
            ("/v1/blocks/{hash}/info", "LocalRefs"),
        ] {
            let params = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {path} has parameters"));
            let param = |name: &str| {
                params
                    .iter()
                    .find(|p| p["name"] == name && p["in"] == "query")
                    .unwrap_or_else(|| panic!("GET {path} documents ?{name}="))
            };
            assert_eq!(param("limit")["schema"]["minimum"], 1, "{path}");
            assert_eq!(param("limit")["schema"]["maximum"], 1000, "{path}");
            assert!(param("after")["schema"]["pattern"].is_string(), "{path}");
            assert!(
                doc["components"]["schemas"][next_in]["properties"]["next"].is_object(),
                "the answer of GET {path} says how to get the next page"
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
            assert!(
                doc["paths"][path]["get"]["responses"]["401"].is_null(),
                "{path}"
            );
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["token"],
            serde_json::json!({"type": "http", "scheme": "bearer"})
        );
        // Every other operation takes the document's token requirement and says what a
        // missing token gets; `/metrics` is one of them (it needs an admin token).
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                if ["/", "/health", "/v1/openapi.json"].contains(&path.as_str()) {
                    continue;
                }
                assert!(
                    op["security"].is_null(),
                    "{method} {path} overrides security"
                );
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} lacks 401"
                );
            }
        }
        assert!(doc["paths"]["/metrics"]["get"]["responses"]["403"].is_object());
    }

    /// No JSON success answer is a free-form object: each names its fields (a `$ref` to
    /// a component whose properties are listed), and `GET /v1/status`'s lists the keys
    /// the CLI and the status page read, down to the members' counts and their age.
    #[test]
    fn json_answers_are_typed_and_the_status_is_described_in_full() {
        let doc = serde_json::to_value(document()).expect("document serialises");
        let schemas = &doc["components"]["schemas"];
        let resolve = |s: &serde_json::Value| -> serde_json::Value {
            match s["$ref"].as_str() {
                Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
                None => s.clone(),
            }
        };
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for (status, r) in op["responses"].as_object().expect("responses") {
                    let schema = &r["content"]["application/json"]["schema"];
                    if !status.starts_with('2') || schema.is_null() {
                        continue;
                    }
                    let s = resolve(schema);
                    assert!(
                        s["properties"].is_object() || s["items"].is_object(),
                        "{} {path} → {status}: a free-form JSON answer: {s}",
                        method.to_uppercase()
                    );
                }
            }
        }
        let status = resolve(
            &doc["paths"]["/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"],
        );
        let keys = |s: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = s["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        assert_eq!(
            keys(&status),
            [
                "anti_entropy",
                "layout",
                "members",
                "node",
                "peers",
                "resync",
                "storage"
            ]
        );
        let member = resolve(&status["properties"]["members"]["items"]);
        for k in [
            "blocks",
            "bytes",
            "disk_capacity",
            "stats_age_secs",
            "up",
            "partitions",
        ] {
            assert!(
                keys(&member).iter().any(|m| m == k),
                "members[] lacks {k}: {member}"
            );
        }
        for (part, k) in [
            ("resync", "scrub"),
            ("anti_entropy", "partitions_in_sync"),
            ("storage", "rebalance"),
            ("layout", "transition"),
        ] {
            let s = resolve(&status["properties"][part]);
            assert!(keys(&s).iter().any(|m| m == k), "{part} lacks {k}: {s}");
        }
    }
}

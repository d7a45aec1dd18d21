//! `GET /`: the status page, one self-contained HTML file (`status_page.html`, inline CSS
//! and JavaScript, no external assets, works offline). Loading it needs no token: the
//! page asks for one, keeps it in the tab's session storage, and reads `GET /v1/status`
//! and `GET /v1/resync/errors` with it every few seconds.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page, compiled into the binary.
const STATUS_PAGE: &str = include_str!("status_page.html");

#[utoipa::path(get, path = "/", tag = "node", security(()), responses((status = 200, description = "the status page (HTML; it asks for a token and reads the JSON API)", content_type = "text/html", body = String)))]
pub(super) async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page holds no data (it fetches it), but a stale copy after an upgrade
        // would read fields that moved.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(STATUS_PAGE)
}

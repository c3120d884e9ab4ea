//! The chat page at `/`: a few static files compiled into the binary (`include_str!` of
//! `src/webui/`), so `qwen3-infer serve` needs no other file, no build step and no network.
//!
//! The page is plain HTML, CSS and JavaScript modules; it talks to this server's own
//! `/v1/chat/completions` (streamed) from the browser. What it shows comes from the model, so
//! the page builds its DOM with `textContent` and never parses model text as HTML, and every
//! answer here carries a Content-Security-Policy that allows scripts, styles and requests from
//! this origin only and no inline script: a `<script>` that slipped into the DOM anyway would
//! not run. The page and its assets need no API key (they hold no data); the page asks the
//! user for the key and sends it with each API call, keeping it in the browser's storage.
//!
//! Costs: about 60 KB of text in the binary; each asset is answered from memory with
//! `Cache-Control: no-cache`, so a browser revalidates and a new binary's page is seen at once
//! (the files are small, and a local server answers in microseconds).

use crate::api::not_found;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

/// The policy of every page answer: nothing but this origin's own files and API, no inline
/// script or style, no framing by other sites, no form posts, no `<base>` rewriting.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The URL prefix of the page's assets (`/webui/app.js`); the page itself is `/`.
pub const ASSET_PREFIX: &str = "/webui/";

/// One embedded file: its name under [`ASSET_PREFIX`], its media type and its text.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("webui/index.html"),
};

/// Every asset the page loads; anything else under the prefix is a 404.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("webui/app.js"),
    },
    Asset {
        name: "chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("webui/chat.js"),
    },
    Asset {
        name: "store.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("webui/store.js"),
    },
    Asset {
        name: "markdown.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("webui/markdown.js"),
    },
    Asset {
        name: "highlight.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("webui/highlight.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("webui/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("webui/favicon.svg"),
    },
];

/// Whether a path is the page or one of its assets: these are answered without the API key.
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path.starts_with(ASSET_PREFIX)
}

/// `GET /`: the chat page.
pub async fn index() -> Response {
    respond(&INDEX)
}

/// `GET /webui/{name}`: one of the page's files, or a 404 for any other name.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => respond(asset),
        None => not_found().await.into_response(),
    }
}

fn respond(asset: &Asset) -> Response {
    (
        [
            (CONTENT_TYPE, asset.content_type),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            // The declared type is the only type: a browser never sniffs one of these as HTML.
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            (CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page names (`webui/NAME` in the HTML, `'./NAME'` in a module import) is
    /// served, and nothing is loaded from another site.
    #[test]
    fn the_page_loads_only_embedded_assets() {
        let mut referenced = Vec::new();
        for text in std::iter::once(INDEX.body).chain(ASSETS.iter().map(|a| a.body)) {
            for prefix in ["\"webui/", "'./"] {
                for (at, _) in text.match_indices(prefix) {
                    let name: String = text[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                        .collect();
                    referenced.push(name);
                }
            }
            for (at, _) in text.match_indices("://") {
                // Only XML namespace names (never fetched) may be absolute URLs.
                let rest: String = text[at..].chars().take(30).collect();
                assert!(
                    rest.starts_with("://www.w3.org/"),
                    "an external URL in the page: {rest}"
                );
            }
        }
        for name in [
            "app.js",
            "chat.js",
            "store.js",
            "markdown.js",
            "highlight.js",
            "style.css",
            "favicon.svg",
        ] {
            assert!(
                referenced.iter().any(|r| r == name),
                "{name} is not loaded by the page"
            );
        }
        for name in &referenced {
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{name} is referenced but not embedded"
            );
        }
    }

    #[test]
    fn page_paths_are_the_page_and_its_assets_only() {
        assert!(is_page_path("/"));
        assert!(is_page_path("/webui/app.js"));
        assert!(!is_page_path("/v1/models"));
        assert!(!is_page_path("/metrics"));
        assert!(!is_page_path("/webuix"));
    }
}

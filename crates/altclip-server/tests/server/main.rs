//! HTTP tests of `altclip serve` on the tiny fixture model: every route, the
//! recorded immich requests, a bounded load test and the web page in Chromium.

mod browser;
mod common;
mod http;
mod immich;
mod load;

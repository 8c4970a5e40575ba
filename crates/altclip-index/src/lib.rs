//! Bilingual photo-library search on AltCLIP: an incremental, resumable index
//! of a folder tree in one SQLite file, and text / image / mixed queries.
//!
//! [`Index`] holds the manifest (which file has which content), [`store`]
//! the vectors behind the [`VectorStore`] trait, [`indexer`] keeps them in
//! step with the disk, and [`query`] turns `"2:一只猫" + beach.jpg - "雪"` into
//! one query vector. Past a size threshold, [`ann`] keeps an HNSW graph
//! beside the database for approximate search.

pub mod ann;
pub mod db;
pub mod dedup;
pub mod error;
pub mod export;
mod files;
pub mod filter;
pub mod indexer;
pub mod media;
pub mod pipeline;
pub mod query;
pub mod store;
pub mod video;
pub mod walk;
pub mod watch;

pub use ann::AnnParams;
pub use db::{Index, ModelInfo, ANN_THRESHOLD};
pub use error::{Error, Result};
pub use media::Media;
pub use store::{search_known, AnnPolicy, GraphUse, SqliteVectors, VectorDtype, VectorStore};

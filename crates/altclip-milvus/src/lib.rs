//! A Milvus backend for [`altclip_index::VectorStore`], over gRPC.
//!
//! [`MilvusStore`] keeps the vectors of a photo index in one Milvus
//! collection with two fields: `key` (VARCHAR(64), the primary key: the
//! content hash) and `vector` (FLOAT_VECTOR(dim)), searched by inner
//! product. The collection is created, indexed and loaded on first use.
//!
//! ```no_run
//! use altclip_index::VectorStore;
//! use altclip_milvus::MilvusStore;
//!
//! let mut store = MilvusStore::connect("milvus://127.0.0.1:19530/photos", 768)?;
//! store.upsert(&[("ab".repeat(32), vec![0.0; 768])])?;
//! let hits = store.search(&vec![0.0; 768], 10)?;
//! # Ok::<(), altclip_index::Error>(())
//! ```
//!
//! The trait is synchronous and the SDK asynchronous: the store owns a
//! single-threaded tokio runtime and blocks on each call. Do not call it
//! from inside another tokio runtime.
//!
//! Written for `milvus-sdk-rust` 3.0.3 and checked against milvus-lite:
//! filters are always literal (`key in ["a", "b"]`, never templates or
//! `get(ids)`), the index is created without waiting on its build state, and
//! every write is followed by a flush so that the next search sees it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use altclip_index::{Error, Result, VectorStore};
use milvus::v2::prelude::{
    ClientV2, CollectionSchema, ConnectConfig, ConsistencyLevel, CreateCollectionRequest,
    CreateIndexRequest, DataType, DeleteRequest, DescribeCollectionRequest, DropCollectionRequest,
    FieldData, FieldSchema, FlushRequest, HasCollectionRequest, Ids, IndexParam, IndexType,
    InsertRequest, LoadCollectionRequest, MetricType, QueryRequest, RetryConfig, SearchRequest,
    SearchVectors, TelemetryConfig, UpsertRequest,
};

/// Name of the primary-key field (the content hash).
pub const KEY_FIELD: &str = "key";
/// Name of the vector field.
pub const VECTOR_FIELD: &str = "vector";
/// Longest key the collection accepts (a SHA-256 hex digest is 64).
pub const MAX_KEY_LEN: usize = 64;
/// Port of a Milvus server when the URI names none.
pub const DEFAULT_PORT: u16 = 19530;

/// Most keys in one `key in [...]` filter.
const KEYS_PER_FILTER: usize = 1000;
/// Most filter matches selected by `key in [...]` expressions and ranked here.
const MAX_FILTERED_KEYS: usize = 20 * KEYS_PER_FILTER;
/// Target size of one gRPC message of vectors. Responses must stay under
/// tonic's default 4 MiB decode limit, which the SDK does not raise.
const MESSAGE_BYTES: usize = 2 << 20;
/// Largest `limit` Milvus accepts for a search or a query page.
const MAX_TOPK: usize = 16384;

/// A parsed `milvus://[user:password@]host[:port]/collection` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilvusUri {
    /// Host name or address; IPv6 addresses keep their brackets.
    pub host: String,
    /// gRPC port, [`DEFAULT_PORT`] when the URI names none.
    pub port: u16,
    /// The collection holding the vectors.
    pub collection: String,
    /// `user:password`, sent as the token, when the URI has one.
    pub credentials: Option<String>,
}

impl MilvusUri {
    /// Parses `milvus://[user:password@]host[:port]/collection`.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "invalid Milvus URI {:?}: {why}; expected milvus://HOST[:PORT]/COLLECTION, \
                 e.g. milvus://127.0.0.1:{DEFAULT_PORT}/photos",
                redact(uri)
            ))
        };
        let rest = uri
            .strip_prefix("milvus://")
            .ok_or_else(|| bad("it must start with milvus://"))?;
        let (authority, collection) = rest
            .split_once('/')
            .ok_or_else(|| bad("the collection name is missing"))?;
        let collection = collection.strip_suffix('/').unwrap_or(collection);
        if collection.is_empty() {
            return Err(bad("the collection name is missing"));
        }
        if collection.contains(['/', '?', '#']) {
            return Err(bad("the path must be a single collection name"));
        }
        validate_collection_name(collection).map_err(|why| bad(&why))?;
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((cred, hp)) => (Some(cred.to_owned()), hp),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the IPv6 host"))?;
            (format!("[{addr}]"), after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("the host is missing"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("{p:?} is not a port number")))?,
        };
        Ok(Self {
            host,
            port,
            collection: collection.to_owned(),
            credentials,
        })
    }

    /// The gRPC endpoint, `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for MilvusUri {
    /// Writes the URI without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "milvus://")?;
        if let Some(cred) = &self.credentials {
            let user = cred.split_once(':').map_or(cred.as_str(), |(u, _)| u);
            write!(f, "{user}:***@")?;
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.collection)
    }
}

/// Milvus names: a letter or underscore, then letters, digits and underscores.
fn validate_collection_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 255 {
        return Err(format!(
            "collection name {name:?} must start with a letter or underscore and hold only \
             letters, digits and underscores"
        ));
    }
    Ok(())
}

/// `uri` with any password hidden, for messages about an unparsable URI.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &uri[s + 3..at];
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{}{user}:***{}", &uri[..s + 3], &uri[at..])
        }
        _ => uri.to_owned(),
    }
}

/// A string literal for a Milvus boolean expression: double-quoted, with
/// backslashes and double quotes escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The filter `key in ["a", "b"]`, written literally: milvus-lite ignores
/// template values, so `get(ids)` and filter templates do not work there.
pub fn key_filter(keys: &[String]) -> String {
    let list: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    format!("{KEY_FIELD} in [{}]", list.join(", "))
}

/// Vectors in one Milvus collection; see the crate docs.
pub struct MilvusStore {
    runtime: tokio::runtime::Runtime,
    client: ClientV2,
    uri: MilvusUri,
    dim: usize,
}

impl fmt::Debug for MilvusStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MilvusStore")
            .field("uri", &self.uri.to_string())
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl MilvusStore {
    /// Connects to `milvus://[user:password@]host[:port]/collection`, and
    /// creates, indexes (HNSW, inner product) and loads the collection of
    /// `dim`-dimensional vectors when it does not exist yet. An existing
    /// collection must have the same schema and dimension.
    pub fn connect(uri: &str, dim: usize) -> Result<Self> {
        let uri = MilvusUri::parse(uri)?;
        if dim == 0 || dim > 32768 {
            return Err(Error::Invalid(format!(
                "{uri}: vector dimension {dim} is out of range; Milvus accepts 1 to 32768"
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("{uri}: cannot start a tokio runtime: {e}")))?;
        let mut config = ConnectConfig::new()
            .uri(uri.endpoint())
            .connect_timeout(Duration::from_secs(10))
            .rpc_timeout(Duration::from_secs(120))
            // The default retries 75 times with backoff, minutes on a dead
            // server; fail fast enough for an interactive tool instead.
            .retry(
                RetryConfig::new()
                    .max_attempts(5)
                    .max_retry_timeout(Duration::from_secs(20)),
            )
            // The heartbeat RPC is unimplemented by milvus-lite, and would
            // only run while a call is blocking on the runtime anyway.
            .telemetry(TelemetryConfig::new().enabled(false));
        if let Some(cred) = &uri.credentials {
            config = config.token(cred.clone());
        }
        let client = runtime.block_on(ClientV2::new(&config)).map_err(|e| {
            Error::Backend(format!(
                "{uri}: cannot connect to Milvus at {}: {e}. Is the server running and \
                 reachable? Start one (e.g. `milvus-lite server --port {}`) or fix the host and \
                 port in the URI",
                uri.endpoint(),
                uri.port
            ))
        })?;
        let store = Self {
            runtime,
            client,
            uri,
            dim,
        };
        store.ensure_collection()?;
        Ok(store)
    }

    /// The collection's name.
    pub fn collection(&self) -> &str {
        &self.uri.collection
    }

    /// The dimension of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The URI, without its password.
    pub fn uri(&self) -> String {
        self.uri.to_string()
    }

    /// How many vectors the collection holds.
    pub fn count(&self) -> Result<u64> {
        let request = QueryRequest::builder()
            .collection_name(self.collection())
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("count", e))?;
        let response = self
            .runtime
            .block_on(self.client.query(request))
            .map_err(|e| self.err("count", e))?;
        let row = response
            .results()
            .rows()
            .map_err(|e| self.err("count", e))?
            .next()
            .ok_or_else(|| self.err("count", "the server returned no row"))?;
        let n = row.get_i64("count(*)").map_err(|e| self.err("count", e))?;
        u64::try_from(n).map_err(|_| self.err("count", format!("negative count {n}")))
    }

    /// Drops the whole collection and every vector in it.
    pub fn drop_collection(self) -> Result<()> {
        let request = DropCollectionRequest::builder()
            .collection_name(self.collection())
            .build()
            .map_err(|e| self.err("drop the collection", e))?;
        self.runtime
            .block_on(self.client.drop_collection(request))
            .map_err(|e| self.err("drop the collection", e))
    }

    /// An error naming the URI and the operation, with a hint to fix it.
    fn err(&self, what: &str, e: impl fmt::Display) -> Error {
        Error::Backend(format!(
            "{}: cannot {what}: {e}. Check that the Milvus server is up (and that \
             `{}` is loaded), or recreate the collection if its schema is wrong",
            self.uri, self.uri.collection
        ))
    }

    fn ensure_collection(&self) -> Result<()> {
        let c = self.collection().to_owned();
        let exists = self
            .runtime
            .block_on(
                self.client.has_collection(
                    HasCollectionRequest::builder()
                        .collection_name(&c)
                        .build()
                        .map_err(|e| self.err("check the collection", e))?,
                ),
            )
            .map_err(|e| self.err("check the collection", e))?
            .exists();
        if exists {
            self.check_schema()?;
        } else {
            self.create_collection()?;
        }
        let load = LoadCollectionRequest::builder()
            .collection_name(&c)
            .build()
            .map_err(|e| self.err("load the collection", e))?;
        self.runtime
            .block_on(self.client.load_collection(load))
            .map_err(|e| self.err("load the collection", e))
    }

    fn create_collection(&self) -> Result<()> {
        let c = self.collection();
        let schema = CollectionSchema::new()
            .add_field(
                FieldSchema::new()
                    .name(KEY_FIELD)
                    .description("content hash")
                    .data_type(DataType::VarChar)
                    .max_length(MAX_KEY_LEN as u32)
                    .primary_key(true)
                    .auto_id(false),
            )
            .add_field(
                FieldSchema::new()
                    .name(VECTOR_FIELD)
                    .description("L2-normalised AltCLIP embedding")
                    .data_type(DataType::FloatVector)
                    .dimension(self.dim as u32),
            );
        let create = CreateCollectionRequest::builder()
            .collection_name(c)
            .description("altclip photo index")
            .schema(schema)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("create the collection", e))?;
        self.runtime
            .block_on(self.client.create_collection(create))
            .map_err(|e| self.err("create the collection", e))?;
        let index = CreateIndexRequest::builder()
            .collection_name(c)
            .index_params(vec![IndexParam::new()
                .field_name(VECTOR_FIELD)
                // The v1 API finds indexes by field name; keep them equal.
                .index_name(VECTOR_FIELD)
                .index_type(IndexType::Hnsw)
                .metric_type(MetricType::Ip)
                .extra_params(HashMap::from([
                    ("M".into(), "16".into()),
                    ("efConstruction".into(), "200".into()),
                ]))])
            // Waiting calls AllocTimestamp, which milvus-lite lacks; loading
            // waits for the index anyway.
            .sync(false)
            .build()
            .map_err(|e| self.err("create the vector index", e))?;
        self.runtime
            .block_on(self.client.create_index(index))
            .map_err(|e| self.err("create the vector index", e))
    }

    fn check_schema(&self) -> Result<()> {
        let request = DescribeCollectionRequest::builder()
            .collection_name(self.collection())
            .build()
            .map_err(|e| self.err("describe the collection", e))?;
        let described = self
            .runtime
            .block_on(self.client.describe_collection(request))
            .map_err(|e| self.err("describe the collection", e))?;
        let fields = described.description().get_schema().get_fields();
        let find = |name: &str| fields.iter().find(|f| f.get_name() == name);
        let mismatch = |why: String| {
            Error::Invalid(format!(
                "{}: the existing collection does not fit this index: {why}. Use another \
                 collection name in the URI, or drop `{}` to let it be recreated",
                self.uri,
                self.collection()
            ))
        };
        match find(KEY_FIELD) {
            Some(f) if f.is_primary_key() && f.get_data_type() == DataType::VarChar => {}
            _ => {
                return Err(mismatch(format!(
                    "it needs a VARCHAR primary key named `{KEY_FIELD}`"
                )))
            }
        }
        match find(VECTOR_FIELD) {
            Some(f) if f.get_data_type() == DataType::FloatVector => {
                let have = f.get_dimension() as usize;
                if have != self.dim {
                    return Err(mismatch(format!(
                        "it holds {have}-dimensional vectors but this model makes {}-dimensional \
                         ones",
                        self.dim
                    )));
                }
            }
            _ => {
                return Err(mismatch(format!(
                    "it needs a FLOAT_VECTOR field named `{VECTOR_FIELD}`"
                )))
            }
        }
        Ok(())
    }

    fn check_dim(&self, what: &str, len: usize) -> Result<()> {
        if len != self.dim {
            return Err(Error::Invalid(format!(
                "{}: {what} has {len} dimensions but the collection holds {}-dimensional vectors",
                self.uri, self.dim
            )));
        }
        Ok(())
    }

    /// Rows per gRPC message, so that a message of vectors stays small.
    fn rows_per_message(&self) -> usize {
        (MESSAGE_BYTES / (self.dim * 4 + MAX_KEY_LEN + 32)).clamp(1, KEYS_PER_FILTER)
    }

    /// Makes writes durable and visible to the next search or query.
    fn flush(&self) -> Result<()> {
        let request = FlushRequest::builder()
            .collection_names([self.collection()])
            .wait_flushed_ms(60_000)
            .build()
            .map_err(|e| self.err("flush", e))?;
        self.runtime
            .block_on(self.client.flush(request))
            .map_err(|e| self.err("flush", e))
            .map(drop)
    }

    /// One page of `all()`: the smallest keys above `after`, in key order.
    fn page(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<f32>)>> {
        let what = "read the vectors";
        let request = QueryRequest::builder()
            .collection_name(self.collection())
            .filter(format!("{KEY_FIELD} > {}", quote(after)))
            .output_fields([KEY_FIELD, VECTOR_FIELD])
            .limit(limit as i64)
            // Asks for primary-key order, as the SDKs' query iterators do.
            // (Their `reduce_stop_for_best` is left out: with it Milvus 2.3
            // ends a page early at a segment boundary.)
            .extra_params(HashMap::from([("iterator".into(), "true".into())]))
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err(what, e))?;
        self.keys_and_vectors(request, what)
    }

    /// Runs a query for the key and vector fields and reads its rows.
    fn keys_and_vectors(
        &self,
        request: QueryRequest,
        what: &str,
    ) -> Result<Vec<(String, Vec<f32>)>> {
        let response = self
            .runtime
            .block_on(self.client.query(request))
            .map_err(|e| self.err(what, e))?;
        let mut rows = Vec::new();
        for row in response.results().rows().map_err(|e| self.err(what, e))? {
            let key = row.get_str(KEY_FIELD).map_err(|e| self.err(what, e))?;
            let v = row
                .get_float_vector(VECTOR_FIELD)
                .map_err(|e| self.err(what, e))?;
            rows.push((key.to_owned(), v.to_vec()));
        }
        Ok(rows)
    }
}

impl MilvusStore {
    /// The stored vectors of those of `keys` that exist.
    fn vectors_of(&self, keys: &[String]) -> Result<Vec<(String, Vec<f32>)>> {
        let what = "read the filtered vectors";
        let mut out = Vec::new();
        for chunk in keys.chunks(self.rows_per_message().clamp(1, KEYS_PER_FILTER)) {
            let request = QueryRequest::builder()
                .collection_name(self.collection())
                .filter(key_filter(chunk))
                .output_fields([KEY_FIELD, VECTOR_FIELD])
                .limit(chunk.len() as i64)
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(|e| self.err(what, e))?;
            out.extend(self.keys_and_vectors(request, what)?);
        }
        Ok(out)
    }

    /// The `k` nearest rows, best first.
    fn search_all(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>> {
        self.check_dim("the query", query.len())?;
        let k = k.min(MAX_TOPK);
        if k == 0 {
            return Ok(Vec::new());
        }
        let request = SearchRequest::builder()
            .collection_name(self.collection())
            .vector_field(VECTOR_FIELD)
            .vectors(SearchVectors::Float(vec![query.to_vec()]))
            .metric_type(MetricType::Ip)
            .extra_params(HashMap::from([("ef".into(), k.max(64).to_string())]))
            .limit(k as i64)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("search", e))?;
        let response = self
            .runtime
            .block_on(self.client.search(request))
            .map_err(|e| self.err("search", e))?;
        // Read ids and scores directly: decoding rows needs the primary-key
        // and score field names, which Milvus 2.3 does not send.
        let Some(result) = response.results().get_results().first() else {
            return Ok(Vec::new());
        };
        let Ids::VarChar(ids) = result.get_ids() else {
            return Err(self.err("search", "the server returned integer keys"));
        };
        let scores = result.get_scores();
        if ids.len() != scores.len() {
            return Err(self.err(
                "search",
                format!("{} keys came back with {} scores", ids.len(), scores.len()),
            ));
        }
        let mut hits: Vec<(String, f32)> =
            ids.iter().cloned().zip(scores.iter().copied()).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        hits.truncate(k);
        Ok(hits)
    }
}

impl VectorStore for MilvusStore {
    fn upsert(&mut self, vectors: &[(String, Vec<f32>)]) -> Result<()> {
        if vectors.is_empty() {
            return Ok(());
        }
        // Later entries replace earlier ones, as with INSERT OR REPLACE;
        // Milvus rejects a batch that repeats a primary key.
        let mut last = HashMap::with_capacity(vectors.len());
        for (i, (key, v)) in vectors.iter().enumerate() {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(Error::Invalid(format!(
                    "{}: key {key:?} must be 1 to {MAX_KEY_LEN} bytes long",
                    self.uri
                )));
            }
            self.check_dim(&format!("vector {key}"), v.len())?;
            last.insert(key.as_str(), i);
        }
        let unique: Vec<&(String, Vec<f32>)> = vectors
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| last[key.as_str()] == *i)
            .map(|(_, kv)| kv)
            .collect();
        for chunk in unique.chunks(self.rows_per_message()) {
            let keys = chunk.iter().map(|(k, _)| k.clone()).collect();
            let vecs = chunk.iter().map(|(_, v)| v.clone()).collect();
            let insert = InsertRequest::builder()
                .collection_name(self.collection())
                .columns(vec![
                    FieldData::varchar(KEY_FIELD, keys),
                    FieldData::float_vector(VECTOR_FIELD, vecs),
                ])
                .build()
                .map_err(|e| self.err("upsert vectors", e))?;
            let request = UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| self.err("upsert vectors", e))?;
            self.runtime
                .block_on(self.client.upsert(request))
                .map_err(|e| self.err("upsert vectors", e))?;
        }
        self.flush()
    }

    fn remove(&mut self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        for chunk in keys.chunks(KEYS_PER_FILTER) {
            let request = DeleteRequest::builder()
                .collection_name(self.collection())
                .filter(key_filter(chunk))
                .build()
                .map_err(|e| self.err("delete vectors", e))?;
            self.runtime
                .block_on(self.client.delete(request))
                .map_err(|e| self.err("delete vectors", e))?;
        }
        self.flush()
    }

    fn contains(&self, keys: &[String]) -> Result<Vec<bool>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(KEYS_PER_FILTER) {
            let request = QueryRequest::builder()
                .collection_name(self.collection())
                .filter(key_filter(chunk))
                .output_fields([KEY_FIELD])
                .consistency_level(ConsistencyLevel::Strong)
                .build()
                .map_err(|e| self.err("look up keys", e))?;
            let response = self
                .runtime
                .block_on(self.client.query(request))
                .map_err(|e| self.err("look up keys", e))?;
            for row in response
                .results()
                .rows()
                .map_err(|e| self.err("look up keys", e))?
            {
                let key = row
                    .get_str(KEY_FIELD)
                    .map_err(|e| self.err("look up keys", e))?;
                found.insert(key.to_owned());
            }
        }
        Ok(keys.iter().map(|k| found.contains(k)).collect())
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<(String, f32)>> {
        self.search_all(query, k)
    }

    /// A filter's matches, up to [`MAX_FILTERED_KEYS`]: their rows are
    /// selected in Milvus by the boolean expression `key in [...]` (1,000
    /// keys at a time) and ranked exactly here. (Milvus's own filtered graph
    /// search missed the best rows of such a filter in our tests.) A filter
    /// matching more takes most of the collection, and the widening search
    /// finds its top-k in a few rounds.
    fn search_among(
        &self,
        query: &[f32],
        k: usize,
        keys: &HashSet<String>,
    ) -> Result<Vec<(String, f32)>> {
        self.check_dim("the query", query.len())?;
        if keys.len() > MAX_FILTERED_KEYS {
            return altclip_index::store::search_known(self, query, k, |h| keys.contains(h));
        }
        let mut sorted: Vec<String> = keys.iter().cloned().collect();
        sorted.sort();
        let mut hits = Vec::new();
        for (key, v) in self.vectors_of(&sorted)? {
            self.check_dim(&format!("stored vector {key}"), v.len())?;
            let score = v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
            hits.push((key, score));
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        hits.truncate(k);
        Ok(hits)
    }

    fn all(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let expected = self.count()?;
        let limit = self.rows_per_message().min(MAX_TOPK);
        let mut out: Vec<(String, Vec<f32>)> = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.page(&after, limit)?;
            let Some(max) = page.iter().map(|(k, _)| k).max().cloned() else {
                break;
            };
            for (key, v) in &page {
                self.check_dim(&format!("stored vector {key}"), v.len())?;
            }
            // A short page is not proof of the end (a server may stop a page
            // early), so only an empty one ends the scan.
            out.extend(page);
            after = max;
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        if out.len() as u64 != expected {
            return Err(self.err(
                "read the vectors",
                format!(
                    "paging by key returned {} vectors but the collection counts {expected}; \
                     the server may not return query pages in key order, or writes ran \
                     concurrently",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let u = MilvusUri::parse("milvus://127.0.0.1:19531/photos").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 19531);
        assert_eq!(u.collection, "photos");
        assert_eq!(u.endpoint(), "http://127.0.0.1:19531");
        assert_eq!(u.to_string(), "milvus://127.0.0.1:19531/photos");

        let u = MilvusUri::parse("milvus://db.example/_x1/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("db.example", DEFAULT_PORT));
        assert_eq!(u.collection, "_x1");

        let u = MilvusUri::parse("milvus://root:Milvus@[::1]:9/c").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port, 9);
        assert_eq!(u.credentials.as_deref(), Some("root:Milvus"));
        assert_eq!(u.to_string(), "milvus://root:***@[::1]:9/c");
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            "http://h:1/c",
            "milvus://h:1",
            "milvus://h:1/",
            "milvus://h:x/c",
            "milvus://h:0/c",
            "milvus://:1/c",
            "milvus://h/a/b",
            "milvus://h/1abc",
            "milvus://h/a-b",
        ] {
            let e = MilvusUri::parse(bad).unwrap_err().to_string();
            assert!(e.contains("milvus://HOST[:PORT]/COLLECTION"), "{bad}: {e}");
        }
        let e = MilvusUri::parse("milvus://u:secret@h/a-b")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn filters_are_literal_and_escaped() {
        assert_eq!(
            key_filter(&["ab".into(), "c\"d\\e".into()]),
            r#"key in ["ab", "c\"d\\e"]"#
        );
        assert_eq!(quote("a\nb"), r#""a\nb""#);
    }
}

//! The `altclip._altclip` extension module: the engine for Python. The
//! public API (`altclip.AltCLIP`, `altclip.Index`) is plain Python in
//! `python/altclip/`, which turns PIL images and numpy arrays into the inputs
//! here and the float rows returned here into numpy arrays.

mod engine;
mod images;
mod library;

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    _altclip,
    ImageError,
    PyValueError,
    "An image could not be read, decoded or preprocessed; the message names the item and its index."
);
create_exception!(
    _altclip,
    ModelError,
    PyOSError,
    "A model (or an index's model) could not be found, read or used."
);

#[pymodule]
fn _altclip(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add(
        "DEFAULT_MAX_PIXELS",
        altclip::preprocess::DEFAULT_MAX_PIXELS,
    )?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<library::Library>()?;
    Ok(())
}

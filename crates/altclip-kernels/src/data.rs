//! Reading a CPU f32 tensor's values in place, with its offset and strides,
//! for the kernels that take several inputs or strided views.

use candle_core::{CpuStorage, Storage, Tensor};

use crate::error::{Error, Result};

/// Calls `f` with the values of the f32 CPU tensor `t` from its first
/// element on, and its strides; `op` and `what` name it in errors.
pub(crate) fn with_f32<R>(
    t: &Tensor,
    op: &'static str,
    what: &str,
    f: impl FnOnce(&[f32], &[usize]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
        return Err(Error::Unsupported {
            op,
            reason: format!(
                "{what} must be an f32 tensor on the CPU, got {:?}",
                t.dtype()
            ),
        });
    };
    Ok(f(&values[layout.start_offset()..], layout.stride()))
}

/// Like [`with_f32`] for a tensor that must be contiguous.
pub(crate) fn with_contiguous<R>(
    t: &Tensor,
    op: &'static str,
    what: &str,
    f: impl FnOnce(&[f32]) -> R,
) -> Result<R> {
    if !t.is_contiguous() {
        return Err(Error::Unsupported {
            op,
            reason: format!("{what} {:?} must be contiguous", t.dims()),
        });
    }
    let n = t.elem_count();
    with_f32(t, op, what, |v, _| f(&v[..n]))
}

//! Level-triggered controllers: a reconcile per object key, triggered by store watch events and
//! a periodic resync.

pub mod vm;

use std::path::PathBuf;

use ferrovirt_store::Store;

use crate::ServeError;

/// Starts the controllers and the engine.
pub async fn spawn(_store: Store, _data_dir: PathBuf) -> Result<(), ServeError> {
    Ok(())
}

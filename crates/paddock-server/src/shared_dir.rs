//! The start-up check that this node's shared directory (workspaces, snapshots) is the one
//! every other node using the database sees.
//!
//! The database holds an identity; the first node to start writes it into
//! `<shared_dir>/cluster_id` and records that it did. A node that then finds no such file, or
//! another identity in it, is looking at a different directory (an unmounted NFS share, a
//! local disk, another installation's share) and refuses to start, rather than running
//! commands in workspaces the other nodes cannot see.

use std::path::Path;

use paddock_protocol::ids::new_id;
use paddock_protocol::time::now_unix;
use paddock_store::Store;

use crate::StartError;

/// The marker file's name in the shared directory.
pub const MARKER: &str = "cluster_id";

/// Checks (or, on the first start, writes) the marker of `root`.
pub(crate) async fn check(store: &dyn Store, root: &Path) -> Result<(), StartError> {
    let (id, written) = store.cluster_identity(&new_id("cls"), now_unix()).await?;
    let path = root.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == id => Ok(()),
        Ok(found) => Err(StartError::SharedDir(format!(
            "{} names database {}, but this database is {id}: this node's shared_dir belongs \
             to another Paddock installation",
            path.display(),
            found.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && written => {
            Err(StartError::SharedDir(format!(
                "{} is missing, but another node has already written it: this node's \
                 shared_dir ({}) is not the filesystem the other nodes share; mount it \
                 (docs/scaling-out.md)",
                path.display(),
                root.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)
                .and_then(|()| std::fs::write(&path, format!("{id}\n")))
                .map_err(|e| {
                    StartError::SharedDir(format!("could not write {}: {e}", path.display()))
                })?;
            store.set_cluster_marker_written().await?;
            Ok(())
        }
        Err(e) => Err(StartError::SharedDir(format!(
            "could not read {}: {e}",
            path.display()
        ))),
    }
}

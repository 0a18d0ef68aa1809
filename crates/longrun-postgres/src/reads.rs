//! Group reads: reads of one operation by id that arrive while others are being answered go to
//! the database together, in one `WHERE id = ANY($1)` statement, as submits share commits (see
//! `writer`). Under many concurrent status polls this costs the database one statement and
//! this node one round trip per group instead of one per read; a lone read goes at once.

use std::collections::HashMap;

use longrun_core::batch::Batcher;
use longrun_core::write::all_failed;
use longrun_core::{Operation, StoreError};
use uuid::Uuid;

use crate::pool::Pool;
use crate::row;

/// Most reads in one statement.
const MAX_GROUP: usize = 256;

/// The queue of reads by id.
pub(crate) type Reads = Batcher<Uuid, Result<Option<Operation>, StoreError>>;

/// Starts answering reads from `pool`.
pub(crate) fn spawn(pool: Pool) -> Reads {
    Batcher::spawn(MAX_GROUP, move |ids: Vec<Uuid>| {
        let pool = pool.clone();
        async move {
            match read(&pool, &ids).await {
                Ok(found) => ids.iter().map(|id| Ok(found.get(id).cloned())).collect(),
                Err(e) => all_failed(ids.len(), &e),
            }
        }
    })
}

/// The operations among `ids` that exist, by id.
async fn read(pool: &Pool, ids: &[Uuid]) -> Result<HashMap<Uuid, Operation>, StoreError> {
    let rows = pool
        .fetch_all(|| sqlx::query(row::operations_where!("o.id = ANY($1)")).bind(ids))
        .await?;
    rows.iter()
        .map(|r| row::decode(r).map(|op| (op.id, op)))
        .collect()
}

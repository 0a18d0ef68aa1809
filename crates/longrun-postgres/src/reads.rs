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
                Ok(found) => hand_out(&ids, found),
                Err(e) => all_failed(ids.len(), &e),
            }
        }
    })
}

/// Each read's answer, in the order of `ids`: the operation found moves to the first read of
/// its id; a later read of the same id in the group gets a copy of that answer.
fn hand_out(
    ids: &[Uuid],
    mut found: HashMap<Uuid, Operation>,
) -> Vec<Result<Option<Operation>, StoreError>> {
    let mut answers: Vec<Option<Operation>> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let answer = found.remove(id).or_else(|| {
            let first = ids[..i].iter().position(|earlier| earlier == id)?;
            answers[first].clone()
        });
        answers.push(answer);
    }
    answers.into_iter().map(Ok).collect()
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

#[cfg(test)]
mod tests {
    use longrun_core::NewOperation;
    use time::OffsetDateTime;

    use super::*;

    /// Every read of a group gets the operation of its id, however often the id repeats, and a
    /// read of an id not found gets none.
    #[test]
    fn every_read_of_a_group_gets_its_operation_repeated_ids_too() {
        let now = OffsetDateTime::now_utc();
        let (a, b, missing) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let found = [a, b]
            .into_iter()
            .map(|id| (id, NewOperation::named("x").into_operation(id, None, now)))
            .collect();
        let answers = hand_out(&[a, missing, b, a, a], found);
        let ids: Vec<Option<Uuid>> = answers
            .into_iter()
            .map(|answer| answer.expect("no error").map(|op| op.id))
            .collect();
        assert_eq!(ids, [Some(a), None, Some(b), Some(a), Some(a)]);
    }
}

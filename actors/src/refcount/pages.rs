//! A block's refs one page at a time ([`ListRefsPage`]): the HTTP API's refs of
//! `GET /v1/blocks/{hash}/info?limit=&after=`. The stored range starts after the last ref
//! of the previous page and is overlaid with the pending writes (`overlay.rs`), so a page
//! costs its own size whatever the block's number of refs.

use std::ops::Bound;

use actix::prelude::*;

use super::keys::{decode_rec, ref_key, split_ref_key};
use super::overlay::{overlay, Merged};
use super::record::RefRec;
use super::{store_err, RefState, RefcountActor, RefcountError};
use crate::hash::{Hash, HASH_LEN};
use crate::ref_id::RefId;

/// Up to `limit` refs of `hash` (live or dropped) after the ref `after`, in name order.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefsPage, RefcountError>")]
pub struct ListRefsPage {
    pub hash: Hash,
    pub after: Option<RefId>,
    pub limit: usize,
}

/// The answer of [`ListRefsPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefsPage {
    pub refs: Vec<(RefId, RefState)>,
    /// Whether more refs follow the last one.
    pub more: bool,
}

impl Handler<ListRefsPage> for RefcountActor {
    type Result = Result<RefsPage, RefcountError>;

    fn handle(&mut self, m: ListRefsPage, _ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        let lower = match &m.after {
            Some(r) => Bound::Excluded(ref_key(&hash, r)),
            None => Bound::Included(hash.as_bytes().to_vec()),
        };
        let in_block = |k: &[u8]| k.len() > HASH_LEN && k[..HASH_LEN] == hash.as_bytes()[..];
        let pending: Vec<(Vec<u8>, Option<RefRec>)> = self
            .pending
            .refs_of(&hash)
            .into_iter()
            .filter(|(k, _)| match &lower {
                Bound::Excluded(l) => k > l,
                _ => true,
            })
            .collect();
        let stored = self
            .refs
            .range::<Vec<u8>, _>((lower.clone(), Bound::Unbounded))
            .map(|g| g.into_inner())
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| in_block(k)));
        let mut out = Vec::new();
        let mut more = false;
        for merged in overlay(stored, pending.into_iter()) {
            let (k, s) = match merged.map_err(store_err)? {
                Merged::Stored(k, v) => (k.to_vec(), decode_rec(&k, &v)),
                Merged::Pending(k, s) => (k, s),
            };
            if out.len() == m.limit {
                more = true;
                break;
            }
            match split_ref_key(&k) {
                Some((_, ref_id)) => out.push((ref_id, s.state)),
                None => tracing::warn!(key = %hex::encode(&k), "malformed refs key; skipped"),
            }
        }
        Ok(RefsPage { refs: out, more })
    }
}

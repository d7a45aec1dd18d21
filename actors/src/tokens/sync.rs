//! The token table's catch-up between nodes, in frames that fit whatever the table's
//! size: the asker sends, one name range at a time, a short digest of each record it
//! has there ([`TokenSyncQuery`]); the peer answers with its records of that range whose
//! digest differs or that the asker lacks, a page at a time ([`TokenSyncPage`]). A first
//! query carrying the whole table's digest ends the round at once when both agree (the
//! common case: one small frame per peer and interval).
//!
//! Sizes: a name is at most 64 bytes, a digest 16, a record about 150 bytes in
//! MessagePack; [`DIGESTS_PER_QUERY`] and [`RECORDS_PER_PAGE`] keep each frame near
//! 25 KiB, under the 64 KiB header limit, and a push to a new member goes out in pages
//! of [`RECORDS_PER_PAGE`] too.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::record::{encode_record, TokenName, TokenRecord};
use crate::hash::blake2sum;

/// Digests sent per query (≤ 256 × ~90 bytes).
pub const DIGESTS_PER_QUERY: usize = 256;
/// Records answered per page, and pushed per `MergeTokens` frame (≤ 128 × ~150 bytes).
pub const RECORDS_PER_PAGE: usize = 128;
/// Bytes of a record's digest.
const DIGEST_LEN: usize = 16;

/// A peer's pull of one name range (`after` excluded, `until` included; `None`: open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSyncQuery {
    /// The asker's digest of its whole table (first query of a round only; empty
    /// otherwise): when equal to the receiver's, nothing differs.
    #[serde(with = "serde_bytes", default)]
    pub table_digest: Vec<u8>,
    pub after: Option<TokenName>,
    pub until: Option<TokenName>,
    /// The asker's records in the range: name and digest ([`record_digest`]).
    pub digests: Vec<(TokenName, serde_bytes::ByteBuf)>,
}

/// The answer to a [`TokenSyncQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSyncPage {
    /// The whole tables agree: the round ends.
    #[serde(default)]
    pub same: bool,
    /// Records of the range that differ from the asker's, or that it lacks.
    pub records: Vec<TokenRecord>,
    /// More of the range differs after this name: ask again with `after` set to it.
    pub next: Option<TokenName>,
}

/// A record's short digest: equal records, equal digests.
pub fn record_digest(r: &TokenRecord) -> Vec<u8> {
    let h = match encode_record(r) {
        Ok(b) => blake2sum(&b),
        // Cannot be sent either; its name still makes it differ.
        Err(_) => blake2sum(r.name.as_str().as_bytes()),
    };
    h.0[..DIGEST_LEN].to_vec()
}

/// The queries that cover a table whose names are `names` (sorted): one per
/// [`DIGESTS_PER_QUERY`] names, the last one open-ended (it also asks for the names
/// after the asker's last); the first carries `table_digest`.
pub fn queries(
    names_and_digests: Vec<(TokenName, Vec<u8>)>,
    table_digest: Vec<u8>,
) -> Vec<TokenSyncQuery> {
    let mut out = Vec::new();
    let mut after: Option<TokenName> = None;
    let mut chunks = names_and_digests.chunks(DIGESTS_PER_QUERY).peekable();
    if chunks.peek().is_none() {
        return vec![TokenSyncQuery {
            table_digest,
            after: None,
            until: None,
            digests: Vec::new(),
        }];
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let until = if last {
            None
        } else {
            chunk.last().map(|(n, _)| n.clone())
        };
        out.push(TokenSyncQuery {
            table_digest: if out.is_empty() {
                table_digest.clone()
            } else {
                Vec::new()
            },
            after: after.clone(),
            until: until.clone(),
            digests: chunk
                .iter()
                .map(|(n, d)| (n.clone(), serde_bytes::ByteBuf::from(d.clone())))
                .collect(),
        });
        after = until;
    }
    out
}

/// The query that continues `q` after `next` (a page was full): the asker's digests of
/// what is left of the range.
pub fn continue_after(q: &TokenSyncQuery, next: TokenName) -> TokenSyncQuery {
    TokenSyncQuery {
        table_digest: Vec::new(),
        digests: q
            .digests
            .iter()
            .filter(|(n, _)| *n > next)
            .cloned()
            .collect(),
        after: Some(next),
        until: q.until.clone(),
    }
}

/// The receiver's answer to `q` from its `table` (whose whole digest is `table_digest`).
pub fn answer(
    table: &BTreeMap<TokenName, TokenRecord>,
    table_digest: &[u8],
    q: &TokenSyncQuery,
) -> TokenSyncPage {
    if !q.table_digest.is_empty() && q.table_digest == table_digest {
        return TokenSyncPage {
            same: true,
            ..TokenSyncPage::default()
        };
    }
    let theirs: HashMap<&TokenName, &[u8]> =
        q.digests.iter().map(|(n, d)| (n, d.as_slice())).collect();
    let lower = q.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
    let upper = q.until.as_ref().map_or(Bound::Unbounded, Bound::Included);
    let mut page = TokenSyncPage::default();
    for (name, r) in table.range::<TokenName, _>((lower, upper)) {
        if theirs.get(name).copied() == Some(record_digest(r).as_slice()) {
            continue;
        }
        if page.records.len() == RECORDS_PER_PAGE {
            page.next = page.records.last().map(|r| r.name.clone());
            break;
        }
        page.records.push(r.clone());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::record::{hash_secret, Scope};

    fn rec(i: usize, revoked: bool) -> TokenRecord {
        TokenRecord {
            name: format!("t{i:05}").parse().expect("valid name"),
            scope: Scope::Read,
            generation: 1,
            created_ms: 1,
            token_hash: hash_secret(&i.to_string()),
            revoked_ms: revoked.then_some(2),
        }
    }

    fn table(n: usize, revoked: impl Fn(usize) -> bool) -> BTreeMap<TokenName, TokenRecord> {
        (0..n)
            .map(|i| rec(i, revoked(i)))
            .map(|r| (r.name.clone(), r))
            .collect()
    }

    /// Run a whole pull of `theirs` by an asker holding `mine`: the records received.
    fn pull(
        mine: &BTreeMap<TokenName, TokenRecord>,
        theirs: &BTreeMap<TokenName, TokenRecord>,
    ) -> (Vec<TokenRecord>, usize) {
        let digests = mine
            .values()
            .map(|r| (r.name.clone(), record_digest(r)))
            .collect();
        let their_digest = super::super::record::table_digest(theirs.values());
        let my_digest = super::super::record::table_digest(mine.values());
        let mut got = Vec::new();
        let mut frames = 0;
        for q in queries(digests, my_digest) {
            let mut q = q;
            loop {
                frames += 1;
                let header = rmp_serde::to_vec_named(&q).expect("query encodes");
                assert!(header.len() < 60_000, "query of {} bytes", header.len());
                let page = answer(theirs, &their_digest, &q);
                let bytes = rmp_serde::to_vec_named(&page).expect("page encodes");
                assert!(bytes.len() < 60_000, "page of {} bytes", bytes.len());
                if page.same {
                    return (got, frames);
                }
                got.extend(page.records.iter().cloned());
                match page.next {
                    Some(n) => q = continue_after(&q, n),
                    None => break,
                }
            }
        }
        (got, frames)
    }

    #[test]
    fn equal_tables_cost_one_frame() {
        let t = table(600, |_| false);
        assert_eq!(pull(&t, &t), (Vec::new(), 1));
    }

    #[test]
    fn an_empty_asker_gets_every_record_in_frames_that_fit() {
        let t = table(1000, |i| i % 3 == 0);
        let (got, frames) = pull(&BTreeMap::new(), &t);
        assert_eq!(got.len(), 1000);
        assert!(frames >= 1000 / RECORDS_PER_PAGE, "{frames} frames");
    }

    #[test]
    fn only_the_records_that_differ_come_back() {
        let mine = table(700, |_| false);
        let theirs = table(750, |i| i == 5 || i == 650);
        let (got, _) = pull(&mine, &theirs);
        let names: Vec<String> = got.iter().map(|r| r.name.as_str().to_string()).collect();
        let mut want = vec!["t00005".to_string(), "t00650".to_string()];
        want.extend((700..750).map(|i| format!("t{i:05}")));
        assert_eq!(names, want);
    }
}

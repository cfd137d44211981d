//! Turning a search term into a tantivy query, and running it one page at a time.
//!
//! Every word must match: as its English stem (recall) or as the exact folded word (which
//! scores higher, matching both); `word*` and the last word of the term also match as a
//! prefix; `"quoted words"` are a phrase. A word that splits into several (CJK characters,
//! `e-mail`) is a phrase of its parts.
//!
//! Pages are stable while messages arrive: `recent` pages continue below the last position
//! returned; `rank` pages continue below the last `(score, position)`, under a snapshot
//! position, with the BM25 statistics of the first page replayed so scores do not drift
//! as the index grows.

use std::{
    collections::{BTreeMap, HashSet},
    ops::Bound,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tantivy::{
    DocAddress, Score, Searcher, SegmentReader, Term,
    collector::{Count, FilterCollector, TopDocs},
    query::{
        Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, FuzzyTermQuery, Occur, PhraseQuery,
        Query, RangeQuery, TermQuery, TermSetQuery,
    },
    schema::{Field, IndexRecordOption},
};

use super::{
    Search,
    schema::{self, Fields},
};
use crate::error::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Rank,
    Recent,
}

/// Which events may match, besides the words.
pub struct Scope {
    /// `content.body`, `content.name`, `content.topic`.
    pub keys: Vec<&'static str>,
    /// The rooms to search, each with the last position the user may find there (where
    /// they left), if any.
    pub rooms: Vec<(String, Option<u64>)>,
    /// The same rooms by short id: hits are kept to these as they are collected. (A query
    /// clause naming the rooms made every search read the posting list of every room the
    /// user is in: 60 ms for a rare word in 1,000 rooms at 100,000 messages, measured.)
    pub shortrooms: Arc<HashSet<u64>>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
}

/// BM25 statistics as the first page saw them.
#[derive(Clone, Default, Serialize, Deserialize, Debug)]
pub struct Stats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docs: Option<u64>,
    #[serde(default)]
    tokens: BTreeMap<u32, u64>,
    #[serde(default)]
    freqs: BTreeMap<String, u64>,
}

/// Where a page ends; the next page starts after it.
#[derive(Clone, Serialize, Deserialize, Debug)]
pub struct Cursor {
    pub order: Order,
    /// The last hit's score (f32 bits; `rank` only).
    pub score: u32,
    pub pos: u64,
    /// Positions above this were stored after the first page and are left out.
    pub snapshot: u64,
    #[serde(default)]
    pub stats: Stats,
}

/// How the collector ranks a hit: (after the cursor, order key, position, short room, score).
type SortKey = (bool, f32, u64, u64, f32);

pub struct Hit {
    pub pos: u64,
    pub shortroomid: u64,
    pub score: f32,
}

pub struct Page {
    /// Best first; at most the asked number.
    pub hits: Vec<Hit>,
    /// No hits after these.
    pub exhausted: bool,
    pub stats: Stats,
}

/// One part of a search term.
#[derive(Debug, PartialEq)]
enum Clause {
    Word { text: String, prefix: bool },
    Phrase(String),
}

fn clauses(term: &str) -> Vec<Clause> {
    let mut out = Vec::new();
    let words = |text: &str, out: &mut Vec<Clause>| {
        for w in text.split_whitespace() {
            let stripped = w.trim_end_matches('*');
            out.push(Clause::Word {
                text: stripped.to_owned(),
                prefix: stripped.len() != w.len(),
            });
        }
    };
    let mut rest = term;
    loop {
        let Some(open) = rest.find('"') else {
            words(rest, &mut out);
            break;
        };
        words(&rest[..open], &mut out);
        let inside = &rest[open + 1..];
        match inside.find('"') {
            Some(close) => {
                out.push(Clause::Phrase(inside[..close].to_owned()));
                rest = &inside[close + 1..];
            }
            None => {
                out.push(Clause::Phrase(inside.to_owned()));
                return out;
            }
        }
    }
    // Search as you type: the last word, still being typed, is a prefix.
    if !term.ends_with(char::is_whitespace)
        && let Some(Clause::Word { prefix, .. }) = out.last_mut()
    {
        *prefix = true;
    }
    out
}

fn tokens(analyzer: &mut tantivy::tokenizer::TextAnalyzer, text: &str) -> Vec<String> {
    schema::words(analyzer, text)
        .into_iter()
        .map(|w| w.0)
        .collect()
}

fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(query, 0.0))
}

fn strings(field: Field, values: impl IntoIterator<Item = impl AsRef<str>>) -> Box<dyn Query> {
    Box::new(TermSetQuery::new(
        values
            .into_iter()
            .map(|v| Term::from_field_text(field, v.as_ref())),
    ))
}

fn pos_range(fields: &Fields, lower: Bound<u64>, upper: Bound<u64>) -> Box<dyn Query> {
    let term = |v| Term::from_field_u64(fields.pos, v);
    Box::new(RangeQuery::new(lower.map(term), upper.map(term)))
}

impl Search {
    /// The words of the term as a query (every clause required), and the words to
    /// highlight; `None` when the term has no words.
    fn text_query(&self, term: &str) -> Option<Box<dyn Query>> {
        let f = self.fields;
        let mut raw = schema::raw_analyzer();
        let mut stem = schema::stem_analyzer();
        let phrase = |words: Vec<String>| -> Box<dyn Query> {
            let terms: Vec<Term> = words
                .iter()
                .map(|w| Term::from_field_text(f.text_raw, w))
                .collect();
            if terms.len() == 1 {
                Box::new(TermQuery::new(
                    terms[0].clone(),
                    IndexRecordOption::WithFreqs,
                ))
            } else {
                Box::new(PhraseQuery::new(terms))
            }
        };
        let mut required: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in clauses(term) {
            let query: Box<dyn Query> = match clause {
                Clause::Phrase(text) => {
                    let words = tokens(&mut raw, &text);
                    if words.is_empty() {
                        continue;
                    }
                    phrase(words)
                }
                Clause::Word { text, prefix } => {
                    let words = tokens(&mut raw, &text);
                    if words.len() != 1 {
                        if words.is_empty() {
                            continue;
                        }
                        required.push((Occur::Must, phrase(words)));
                        continue;
                    }
                    let exact = Term::from_field_text(f.text_raw, &words[0]);
                    let mut any: Vec<(Occur, Box<dyn Query>)> = vec![(
                        Occur::Should,
                        Box::new(TermQuery::new(exact.clone(), IndexRecordOption::WithFreqs)),
                    )];
                    if let Some(stemmed) = tokens(&mut stem, &text).into_iter().next() {
                        any.push((
                            Occur::Should,
                            Box::new(TermQuery::new(
                                Term::from_field_text(f.text, &stemmed),
                                IndexRecordOption::WithFreqs,
                            )),
                        ));
                    }
                    if prefix {
                        any.push((
                            Occur::Should,
                            Box::new(ConstScoreQuery::new(
                                Box::new(FuzzyTermQuery::new_prefix(exact, 0, true)),
                                0.5,
                            )),
                        ));
                    }
                    Box::new(BooleanQuery::new(any))
                }
            };
            required.push((Occur::Must, query));
        }
        (!required.is_empty()).then(|| Box::new(BooleanQuery::new(required)) as Box<dyn Query>)
    }

    /// The full query: the words within the scope. Which rooms, the `snapshot` bound and a
    /// `recent` cursor are checked by the collectors on fast fields: as query clauses they
    /// made every search visit every document of the index (a range over all positions),
    /// so even a rare word's search grew with the corpus (74 ms at 500,000 messages).
    fn full_query(&self, term: &str, scope: &Scope) -> Option<Box<dyn Query>> {
        let f = self.fields;
        if scope.rooms.is_empty() {
            return None;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, self.text_query(term)?)];
        if scope.keys.len() < 3 {
            clauses.push((Occur::Must, filter(strings(f.key, &scope.keys))));
        }
        // Rooms the user left: nothing after the leave. (Which rooms at all is the
        // collectors' `shortrooms` check.)
        for (room, upto) in &scope.rooms {
            if let Some(upto) = upto {
                clauses.push((
                    Occur::MustNot,
                    Box::new(BooleanQuery::new(vec![
                        (Occur::Must, strings(f.room_id, [room])),
                        (
                            Occur::Must,
                            pos_range(&f, Bound::Excluded(*upto), Bound::Unbounded),
                        ),
                    ])),
                ));
            }
        }
        if let Some(senders) = &scope.senders {
            clauses.push((Occur::Must, filter(strings(f.sender, senders))));
        }
        if !scope.not_senders.is_empty() {
            clauses.push((Occur::MustNot, strings(f.sender, &scope.not_senders)));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// Whether the term has any searchable word.
    pub fn has_words(&self, term: &str) -> bool {
        self.text_query(term).is_some()
    }

    /// How many events match at or below `snapshot` (before visibility checks).
    pub fn count(&self, term: &str, scope: &Scope, snapshot: u64) -> Result<u64> {
        let Some(query) = self.full_query(term, scope) else {
            return Ok(0);
        };
        let rooms = Arc::clone(&scope.shortrooms);
        let n = self
            .searcher()
            .search(
                query.as_ref(),
                &FilterCollector::new(
                    "pos".to_owned(),
                    move |pos: u64| pos <= snapshot,
                    FilterCollector::new(
                        "short_room".to_owned(),
                        move |room: u64| rooms.contains(&room),
                        Count,
                    ),
                ),
            )
            .map_err(Error::internal)?;
        Ok(n as u64)
    }

    /// Up to `limit` hits after `cursor` (or from the top), best first.
    pub fn page(
        &self,
        term: &str,
        scope: &Scope,
        order: Order,
        snapshot: u64,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let stats = cursor.map(|c| c.stats.clone()).unwrap_or_default();
        let below = match (order, cursor) {
            (Order::Recent, Some(c)) => Some(c.pos),
            _ => None,
        };
        let Some(query) = self.full_query(term, scope) else {
            return Ok(Page {
                hits: Vec::new(),
                exhausted: true,
                stats,
            });
        };
        // Hits at or above a `rank` cursor sort last with this key and are dropped.
        let after = match (order, cursor) {
            (Order::Rank, Some(c)) => Some((f32::from_bits(c.score), c.pos)),
            _ => None,
        };
        let rooms = Arc::clone(&scope.shortrooms);
        let collector =
            TopDocs::with_limit(limit.max(1)).tweak_score(move |segment: &SegmentReader| {
                let rooms = Arc::clone(&rooms);
                let column = |name: &str| {
                    segment
                        .fast_fields()
                        .u64(name)
                        .ok()
                        .map(|c| c.first_or_default_col(0))
                };
                let (pos, room) = (column("pos"), column("short_room"));
                move |doc: tantivy::DocId, score: Score| {
                    let p = pos.as_ref().map_or(0, |c| c.get_val(doc));
                    let r = room.as_ref().map_or(0, |c| c.get_val(doc));
                    // Sorted last and dropped, like hits before the cursor.
                    if !rooms.contains(&r) || p > snapshot || below.is_some_and(|b| p >= b) {
                        return (false, f32::NEG_INFINITY, 0, 0, score);
                    }
                    if let Some((s, cp)) = after
                        && (score > s || (score == s && p >= cp))
                    {
                        return (false, f32::NEG_INFINITY, 0, 0, score);
                    }
                    let key = if order == Order::Rank { score } else { 0.0 };
                    (true, key, p, r, score)
                }
            });
        let searcher = self.searcher();
        let recorder = Recorder {
            searcher: &searcher,
            stats: Mutex::new(stats),
        };
        let found: Vec<(SortKey, DocAddress)> = searcher
            .search_with_statistics_provider(query.as_ref(), &collector, &recorder)
            .map_err(Error::internal)?;
        let exhausted = found.len() < limit.max(1) || found.iter().any(|(k, _)| !k.0);
        let hits = found
            .into_iter()
            .filter(|(k, _)| k.0)
            .map(|((_, _, pos, shortroomid, score), _)| Hit {
                pos,
                shortroomid,
                score,
            })
            .collect();
        Ok(Page {
            hits,
            exhausted,
            stats: recorder
                .stats
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        })
    }

    /// The words of `text` that the term matches, as written, for `highlights`.
    pub fn matched_words(&self, term: &str, text: &str) -> Vec<String> {
        let mut raw = schema::raw_analyzer();
        let mut stem = schema::stem_analyzer();
        let mut exact = Vec::new();
        let mut stems = Vec::new();
        let mut prefixes = Vec::new();
        for clause in clauses(term) {
            let (text, prefix) = match clause {
                Clause::Word { text, prefix } => (text, prefix),
                Clause::Phrase(text) => (text, false),
            };
            for w in tokens(&mut raw, &text) {
                if prefix {
                    prefixes.push(w.clone());
                }
                exact.push(w);
            }
            stems.extend(tokens(&mut stem, &text));
        }
        let mut out: Vec<String> = Vec::new();
        for (word, from, to) in schema::words(&mut raw, text) {
            let stemmed = tokens(&mut stem, &text[from..to]);
            let hit = exact.contains(&word)
                || stemmed.iter().any(|s| stems.contains(s))
                || prefixes.iter().any(|p| word.starts_with(p.as_str()));
            let original = text[from..to].to_owned();
            if hit && !out.contains(&original) {
                out.push(original);
            }
        }
        out
    }
}

/// The searcher's statistics, except those already fixed by an earlier page; records
/// what it answers for the next page.
struct Recorder<'a> {
    searcher: &'a Searcher,
    stats: Mutex<Stats>,
}

impl Bm25StatisticsProvider for Recorder<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = stats.tokens.get(&field.field_id()) {
            return Ok(*n);
        }
        let n = Bm25StatisticsProvider::total_num_tokens(self.searcher, field)?;
        stats.tokens.insert(field.field_id(), n);
        Ok(n)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = stats.docs {
            return Ok(n);
        }
        let n = Bm25StatisticsProvider::total_num_docs(self.searcher)?;
        stats.docs = Some(n);
        Ok(n)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let docs = self.total_num_docs()?;
        let key = format!(
            "{}:{}",
            term.field().field_id(),
            String::from_utf8_lossy(term.serialized_value_bytes())
        );
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = stats.freqs.get(&key) {
            // BM25's idf needs doc_freq <= docs, whatever a client sent back.
            return Ok((*n).min(docs));
        }
        let n = self.searcher.doc_freq(term)?.min(docs);
        stats.freqs.insert(key, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terms() {
        assert_eq!(
            clauses(r#"foo "bar baz" qu*  x"#),
            [
                Clause::Word {
                    text: "foo".into(),
                    prefix: false
                },
                Clause::Phrase("bar baz".into()),
                Clause::Word {
                    text: "qu".into(),
                    prefix: true
                },
                Clause::Word {
                    text: "x".into(),
                    prefix: true
                },
            ]
        );
        assert_eq!(
            clauses("done "),
            [Clause::Word {
                text: "done".into(),
                prefix: false
            }]
        );
    }
}

//! The search index's documents and how their text is cut into words.
//!
//! Each searchable event is one document. Its text is indexed twice: `text` stemmed
//! (English), so `running` finds `run`; `text_raw` only lower-cased and accent-folded, for
//! exact words, phrases and prefixes. Words are UAX#29 word boundaries, so scripts without
//! spaces still split: Han and kana come out one character a word, and a CJK phrase is a
//! phrase of characters.

use tantivy::{
    Index,
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
        TextOptions,
    },
    tokenizer::{
        AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token,
        TokenStream, Tokenizer,
    },
};
use unicode_segmentation::{UnicodeSegmentation, UnicodeWordIndices};

pub const RAW_ANALYZER: &str = "conduit_raw";
pub const STEM_ANALYZER: &str = "conduit_stem";
/// Longer "words" (base64 blobs, URLs) would only bloat the term dictionary.
const MAX_WORD_BYTES: usize = 64;

/// The fields of a document.
#[derive(Clone, Copy)]
pub struct Fields {
    /// Stream position of the event: the document's identity (deletes go by it), the
    /// order of `recent` and the pagination bound.
    pub pos: Field,
    /// Short id of the room, to read the PDU back as `(short room, position)`.
    pub short_room: Field,
    pub room_id: Field,
    pub sender: Field,
    /// Which content key the text came from: `content.body`, `content.name`, `content.topic`.
    pub key: Field,
    pub ts: Field,
    pub text: Field,
    pub text_raw: Field,
}

pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_with = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let fields = Fields {
        pos: b.add_u64_field("pos", INDEXED | FAST | STORED),
        short_room: b.add_u64_field("short_room", FAST | STORED),
        room_id: b.add_text_field("room_id", STRING),
        sender: b.add_text_field("sender", STRING),
        key: b.add_text_field("key", STRING),
        ts: b.add_u64_field("origin_server_ts", FAST | STORED),
        text: b.add_text_field("text", text_with(STEM_ANALYZER)),
        text_raw: b.add_text_field("text_raw", text_with(RAW_ANALYZER)),
    };
    (b.build(), fields)
}

/// Lower-cased, accent-folded words.
pub fn raw_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The raw words, stemmed as English.
pub fn stem_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzers must be registered on every opened index: tantivy stores only their names.
pub fn register_analyzers(index: &Index) {
    index.tokenizers().register(RAW_ANALYZER, raw_analyzer());
    index.tokenizers().register(STEM_ANALYZER, stem_analyzer());
}

/// The words of `text` with their byte ranges, through `analyzer`.
pub fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push((token.text.clone(), token.offset_from, token.offset_to));
    }
    out
}

/// UAX#29 words (runs of letters, digits and the joiners between them); punctuation,
/// spaces and symbols are dropped.
#[derive(Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

pub struct WordStream<'a> {
    words: UnicodeWordIndices<'a>,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream {
            words: text.unicode_word_indices(),
            token: &mut self.token,
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        let Some((offset, word)) = self.words.next() else {
            return false;
        };
        self.token.text.clear();
        self.token.text.push_str(word);
        self.token.offset_from = offset;
        self.token.offset_to = offset + word.len();
        self.token.position = self.token.position.wrapping_add(1);
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Vec<String> {
        words(&mut raw_analyzer(), text)
            .into_iter()
            .map(|w| w.0)
            .collect()
    }

    #[test]
    fn splits_scripts_and_folds() {
        assert_eq!(raw("Héllo, WORLD!"), ["hello", "world"]);
        assert_eq!(raw("Привет МИР"), ["привет", "мир"]);
        assert_eq!(raw("你好世界"), ["你", "好", "世", "界"]);
        let mut stem = stem_analyzer();
        assert_eq!(
            words(&mut stem, "running dogs")
                .into_iter()
                .map(|w| w.0)
                .collect::<Vec<_>>(),
            ["run", "dog"]
        );
    }
}

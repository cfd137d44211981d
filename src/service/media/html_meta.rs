//! A minimal scanner for what a URL preview needs from a page: `<meta>` tags and the first
//! `<title>`. Not a full HTML parser (html5ever and its tree would cost far more to build
//! than previews are worth): it walks tags, skips comments, scripts and styles (whose
//! text may contain anything that looks like a tag), reads attributes quoted or not, and
//! decodes character references. Malformed input ends the scan early; it never panics.

/// Most `og:` tags kept from one page (Synapse keeps as many; a page with hundreds is
/// not worth more work).
const MAX_OG_TAGS: usize = 50;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageMeta {
    /// `og:*` properties in document order (first occurrence of each kept by the caller).
    pub og: Vec<(String, String)>,
    pub title: Option<String>,
    /// `<meta name="description">`.
    pub description: Option<String>,
}

pub fn scan(html: &str) -> PageMeta {
    let mut meta = PageMeta::default();
    let bytes = html.as_bytes();
    let mut pos = 0;
    while let Some(offset) = html[pos..].find('<') {
        let start = pos + offset;
        let rest = &html[start..];
        if rest.starts_with("<!--") {
            pos = match rest.find("-->") {
                Some(end) => start + end + 3,
                None => break,
            };
            continue;
        }
        let name_start = start + 1;
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 {
            // `</x>`, `<!DOCTYPE>`, a stray `<`: nothing we read.
            pos = name_start;
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let (attrs, after) = attributes(html, name_start + name_len);
        pos = after;
        match name.as_str() {
            "meta" => read_meta(&mut meta, &attrs),
            "title" if meta.title.is_none() => {
                let end = find_ci(&html[pos..], "</title").map_or(html.len(), |e| pos + e);
                let title = collapse(&decode(&html[pos..end]));
                if !title.is_empty() {
                    meta.title = Some(title);
                }
                pos = end;
            }
            // Raw text: a `<meta` inside a script is not a tag.
            "script" | "style" | "textarea" | "title" => {
                let close = format!("</{name}");
                pos = find_ci(&html[pos..], &close).map_or(html.len(), |e| pos + e);
            }
            _ => {}
        }
    }
    meta
}

fn read_meta(meta: &mut PageMeta, attrs: &[(String, String)]) {
    let get = |key: &str| {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(content) = get("content") else {
        return;
    };
    let content = content.trim();
    // Pages use `property` (Open Graph) or `name` (common in the wild) for og tags.
    let key = get("property").or_else(|| get("name")).unwrap_or_default();
    let key = key.trim().to_ascii_lowercase();
    if key.starts_with("og:") {
        if meta.og.len() < MAX_OG_TAGS {
            meta.og.push((key, content.to_owned()));
        }
    } else if key == "description" && meta.description.is_none() && !content.is_empty() {
        meta.description = Some(collapse(content));
    }
}

/// The attributes of a tag whose name ends at `pos`, and the position after its `>`.
fn attributes(html: &str, mut pos: usize) -> (Vec<(String, String)>, usize) {
    let bytes = html.as_bytes();
    let mut attrs = Vec::new();
    loop {
        while pos < bytes.len() && (bytes[pos].is_ascii_whitespace() || bytes[pos] == b'/') {
            pos += 1;
        }
        if pos >= bytes.len() {
            return (attrs, pos);
        }
        if bytes[pos] == b'>' {
            return (attrs, pos + 1);
        }
        let name_start = pos;
        while pos < bytes.len()
            && !bytes[pos].is_ascii_whitespace()
            && !matches!(bytes[pos], b'=' | b'>' | b'/')
        {
            pos += 1;
        }
        if pos == name_start {
            // A lone `=`: skip it.
            pos += 1;
            continue;
        }
        let name = html[name_start..pos].to_ascii_lowercase();
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let mut value = String::new();
        if pos < bytes.len() && bytes[pos] == b'=' {
            pos += 1;
            while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos < bytes.len() && matches!(bytes[pos], b'"' | b'\'') {
                let quote = bytes[pos] as char;
                let end = html[pos + 1..]
                    .find(quote)
                    .map_or(html.len(), |e| pos + 1 + e);
                value = decode(&html[pos + 1..end]);
                pos = (end + 1).min(html.len());
            } else {
                let start = pos;
                while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() && bytes[pos] != b'>' {
                    pos += 1;
                }
                value = decode(&html[start..pos]);
            }
        }
        attrs.push((name, value));
    }
}

/// Case-insensitive search for an ASCII needle.
fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Whitespace runs (newlines and indentation in a title) become one space.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes character references: numeric ones and the named ones pages commonly use.
/// An unknown or malformed reference stays as written, as browsers leave it.
pub fn decode(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map_or(rest.len(), |e| e + 1);
        let name = &rest[1..end];
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let value = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            value
                .filter(|v| *v != 0)
                .map(|v| char::from_u32(v).unwrap_or('\u{FFFD}'))
        } else {
            named(name)
        };
        match decoded {
            Some(c) => {
                out.push(c);
                // The `;` is optional for the references we know.
                rest = rest[end..].strip_prefix(';').unwrap_or(&rest[end..]);
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "middot" => '·',
        "bull" => '•',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_og_tags_title_and_description() {
        let page = r#"<!DOCTYPE html><html><head>
            <!-- <meta property="og:title" content="in a comment"> -->
            <script>var s = '<meta property="og:title" content="in a script">';</script>
            <title>
              The  &amp; Title
            </title>
            <META PROPERTY="og:title" CONTENT='Caf&eacute; &#233;&#x263A; &quot;x&quot;'>
            <meta name=description content=plain>
            <meta property="og:image" content="/img.png"/>
            <meta name="og:url" content="https://example.org/a?b=1&amp;c=2">
            </head><body>&lt;meta property="og:x" content="y"&gt;</body>"#;
        let meta = scan(page);
        assert_eq!(meta.title.as_deref(), Some("The & Title"));
        assert_eq!(meta.description.as_deref(), Some("plain"));
        assert_eq!(
            meta.og,
            vec![
                ("og:title".into(), "Caf&eacute; é☺ \"x\"".into()),
                ("og:image".into(), "/img.png".into()),
                ("og:url".into(), "https://example.org/a?b=1&c=2".into()),
            ]
        );
    }

    #[test]
    fn malformed_input_ends_quietly() {
        for page in [
            "<",
            "<meta",
            "<meta content=\"unterminated",
            "<title>no end",
            "<!-- open",
            "<script>",
            "&#xFFFFFFFF; &#0; &",
            "<meta =x content=>",
            "<meta content='é' property=og:t>",
        ] {
            let _ = scan(page);
        }
        assert_eq!(decode("&#xFFFFFFFF;&#0;&"), "\u{FFFD}&#0;&");
        assert_eq!(
            scan("<meta content='é' property=og:t>").og,
            vec![("og:t".into(), "é".into())]
        );
    }
}

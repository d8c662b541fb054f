//! Finds where a field sits in a YAML document, so validation errors found after parsing can
//! still name the line. serde_yaml reports locations only for its own errors; this walks the
//! event stream (no alias expansion, no recursion) of a document serde_yaml already accepted.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key in a mapping.
    Key(String),
    /// A position in a sequence.
    Index(usize),
}

/// A field path such as `stages[0].split.lines`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The root of the document.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// `:line:column`, or nothing when the position is unknown: what follows the file name in a
/// one-line error.
pub fn position_suffix(position: &Option<Position>) -> String {
    position.map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default()
}

/// A serde_yaml error message without the ` at line L column C` it appends and the path it
/// prepends (`split.lines: `): our errors print both in their own places.
pub fn bare_message(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(' ') => rest.to_owned(),
        _ => message.to_owned(),
    }
}

enum Frame {
    Mapping { key: Option<String>, expecting_key: bool },
    Sequence { next: usize },
}

struct Locator<'a> {
    target: &'a [Segment],
    stack: Vec<Frame>,
    path: Vec<Segment>,
    best: Option<(usize, Position)>,
}

impl Locator<'_> {
    fn consider(&mut self, mark: Marker) {
        let depth = self.path.len();
        if depth <= self.target.len() && self.target[..depth] == self.path[..] {
            let better = self.best.is_none_or(|(d, _)| depth > d);
            if better {
                let position = Position { line: mark.line(), column: mark.col() + 1 };
                self.best = Some((depth, position));
            }
        }
    }

    /// Called when a node (scalar or collection start) begins; returns whether it is a key.
    fn begin_node(&mut self, mark: Marker, scalar: Option<&str>) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, expecting_key }) if *expecting_key => {
                let name = scalar.unwrap_or_default().to_owned();
                *key = Some(name.clone());
                *expecting_key = false;
                self.path.push(Segment::Key(name));
                // Point at the key itself: that is the line a user looks for.
                self.consider(mark);
                self.path.pop();
                true
            }
            Some(Frame::Mapping { key, .. }) => {
                let name = key.clone().unwrap_or_default();
                self.path.push(Segment::Key(name));
                false
            }
            Some(Frame::Sequence { next }) => {
                let index = *next;
                *next += 1;
                self.path.push(Segment::Index(index));
                self.consider(mark);
                false
            }
            None => {
                self.consider(mark);
                false
            }
        }
    }

    /// A scalar or alias: a key, or a complete value.
    fn leaf(&mut self, mark: Marker, scalar: Option<&str>) {
        let is_key = self.begin_node(mark, scalar);
        if !is_key {
            self.end_value();
        }
    }

    fn end_value(&mut self) {
        if let Some(Frame::Mapping { expecting_key, .. }) = self.stack.last_mut() {
            *expecting_key = true;
        }
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Locator<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => self.leaf(mark, Some(&value)),
            Event::Alias(_) => self.leaf(mark, None),
            Event::MappingStart(..) => {
                // A mapping used as a key (not seen in our files) is treated as an opaque key.
                self.begin_node(mark, None);
                self.stack.push(Frame::Mapping { key: None, expecting_key: true });
            }
            Event::SequenceStart(..) => {
                self.begin_node(mark, None);
                self.stack.push(Frame::Sequence { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

/// The position of `path` in `text`: the key's position for a mapping entry, the item's for a
/// sequence element; when the field is absent, the position of the nearest enclosing field.
pub fn locate(text: &str, path: &FieldPath) -> Option<Position> {
    locate_with_depth(text, path).map(|(_, position)| position)
}

/// The position of `path` in `text` only if the field itself is there (no parent fallback).
pub fn locate_exact(text: &str, path: &FieldPath) -> Option<Position> {
    locate_with_depth(text, path).filter(|(depth, _)| *depth == path.0.len()).map(|(_, position)| position)
}

fn locate_with_depth(text: &str, path: &FieldPath) -> Option<(usize, Position)> {
    let mut locator = Locator { target: &path.0, stack: Vec::new(), path: Vec::new(), best: None };
    let mut parser = Parser::new_from_str(text);
    // Errors here mean the document is not YAML at all; serde_yaml has already said so.
    let _ = parser.load(&mut locator, false);
    locator.best
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: demo\ninput:\n  path: data.csv\nstages:\n  - name: one\n    command: [a, b]\n  - name: two\n    split:\n      lines: 0\n";

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let at = |p: &FieldPath| locate(DOC, p).map(|p| (p.line, p.column));
        let root = FieldPath::root();
        assert_eq!(at(&root.key("name")), Some((1, 1)));
        assert_eq!(at(&root.key("input").key("path")), Some((3, 3)));
        assert_eq!(at(&root.key("stages").index(1).key("name")), Some((7, 5)));
        assert_eq!(at(&root.key("stages").index(1).key("split").key("lines")), Some((9, 7)));
    }

    #[test]
    fn absent_field_points_at_nearest_parent() {
        let path = FieldPath::root().key("stages").index(0).key("timeout");
        assert_eq!(locate(DOC, &path).map(|p| p.line), Some(5));
        assert_eq!(locate_exact(DOC, &path), None);
        assert_eq!(locate_exact(DOC, &FieldPath::root().key("input").key("path")).map(|p| p.line), Some(3));
        assert_eq!(path.to_string(), "stages[0].timeout");
    }
}

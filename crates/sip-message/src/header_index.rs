//! The header index of a message: one [`Header`] per line, in order.
//!
//! Most messages have fewer than [`INLINE`] header lines, so the index lives
//! inside the `Message` and parsing allocates nothing for it; a longer
//! message (a request that crossed many proxies) moves it to the heap once.

use crate::header::HeaderName;
use crate::message::{Header, Span};

/// Header lines kept inline: a 200 OK through two record-routing proxies
/// has 11, a REGISTER with credentials 11, an INVITE with SDP 12.
pub(crate) const INLINE: usize = 16;

const EMPTY: Header = Header {
    name: HeaderName::Other,
    name_span: Span { start: 0, end: 0 },
    value_span: Span { start: 0, end: 0 },
    line_span: Span { start: 0, end: 0 },
};

// The inline variant is the point: boxing it would bring back the
// allocation this type exists to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum HeaderIndex {
    Inline { len: u8, items: [Header; INLINE] },
    Heap(Vec<Header>),
}

impl HeaderIndex {
    pub(crate) fn new() -> Self {
        HeaderIndex::Inline { len: 0, items: [EMPTY; INLINE] }
    }

    #[inline]
    pub(crate) fn push(&mut self, h: Header) {
        match self {
            HeaderIndex::Inline { len, items } => match items.get_mut(usize::from(*len)) {
                Some(slot) => {
                    *slot = h;
                    *len += 1;
                }
                None => {
                    let mut v = Vec::with_capacity(INLINE * 4);
                    v.extend_from_slice(items);
                    v.push(h);
                    *self = HeaderIndex::Heap(v);
                }
            },
            HeaderIndex::Heap(v) => v.push(h),
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[Header] {
        match self {
            HeaderIndex::Inline { len, items } => items.get(..usize::from(*len)).unwrap_or_default(),
            HeaderIndex::Heap(v) => v,
        }
    }

    #[inline]
    pub(crate) fn last_mut(&mut self) -> Option<&mut Header> {
        match self {
            HeaderIndex::Inline { len, items } => items.get_mut(..usize::from(*len)).and_then(|s| s.last_mut()),
            HeaderIndex::Heap(v) => v.last_mut(),
        }
    }
}

impl std::ops::Deref for HeaderIndex {
    type Target = [Header];
    fn deref(&self) -> &[Header] {
        self.as_slice()
    }
}

/// As a list, exactly like the `Vec` it stands for.
impl std::fmt::Debug for HeaderIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_to_the_heap_in_order() {
        let mut idx = HeaderIndex::new();
        let h = |i: u32| Header { name_span: Span { start: i, end: i + 1 }, ..EMPTY };
        for i in 0..(INLINE as u32 * 3) {
            idx.push(h(i));
            assert_eq!(idx.len(), i as usize + 1);
            assert_eq!(idx.last_mut().map(|x| x.name_span.start), Some(i));
        }
        assert!(matches!(idx, HeaderIndex::Heap(_)));
        assert!(idx.iter().enumerate().all(|(i, x)| x.name_span.start == i as u32));
        let v: Vec<Header> = idx.to_vec();
        assert_eq!(format!("{idx:?}"), format!("{v:?}"));
    }
}

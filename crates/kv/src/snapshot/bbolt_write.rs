//! A bbolt database file written front to back in one pass, for etcd's
//! snapshot format (see [`super`]).
//!
//! What it writes: bbolt's version-2 file with 4 KiB pages: two meta pages
//! (the same root and high-water mark; transaction ids `TXID` and
//! `TXID - 1`, each with its FNV-64a checksum, as bbolt's own `Tx.WriteTo`
//! does), an empty freelist page, then each bucket's B+tree, then the root
//! bucket's tree, whose leaf elements name the buckets. Every bucket gets
//! pages of its own (none inline), even an empty one (an empty leaf).
//!
//! What it does not: update, delete, reuse pages, or write nested buckets
//! below the top level, which etcd does not use. Pages are filled full
//! (bbolt splits at half a page when it writes, but reads any fill), and an
//! element larger than a page gets the overflow pages bbolt gives it.
//!
//! How it streams: a tree is written bottom-up as its keys arrive in order.
//! A leaf is written when the next element does not fit, and each branch
//! page right after its last child (post-order), so a page's id is its
//! position in the file and only one pending page per tree level is held.
//! The meta pages, first in the file, need the root page's id and the page
//! count: [`PageOut::counting`] runs the same writing over the same data
//! without bytes to learn them first (see [`super::write`]).

use std::io::{self, Write};

/// bbolt's page size here (etcd's on x86-64 Linux: the OS page size).
pub const PAGE_SIZE: usize = 4096;
pub(super) const HEADER: usize = 16;
pub(super) const ELEMENT: usize = 16;
pub(super) const BRANCH: u16 = 0x01;
pub(super) const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// A leaf element that is a bucket.
pub const BUCKET_ELEMENT: u32 = 0x01;
pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// The meta pages' transaction id (meta 1 gets one less, as `Tx.WriteTo`).
const TXID: u64 = 2;
/// Pages before the buckets: the two metas and the freelist.
pub const FIRST_DATA_PAGE: u64 = 3;

/// Where pages go: a writer, or nowhere (only counted).
pub struct PageOut<'a> {
    out: Option<&'a mut dyn Write>,
    next: u64,
}

impl<'a> PageOut<'a> {
    /// Counts the pages that would be written from page `first` on.
    pub fn counting(first: u64) -> PageOut<'static> {
        PageOut {
            out: None,
            next: first,
        }
    }

    /// Writes pages to `out`, the first of them being page `first`.
    pub fn writing(out: &'a mut dyn Write, first: u64) -> PageOut<'a> {
        PageOut {
            out: Some(out),
            next: first,
        }
    }

    /// The id the next page gets; after the last one, the page count.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Emits a page whose first 16 bytes are left for its header: fills the
    /// header in (id, flags, count, overflow), pads it to whole pages and
    /// returns its id.
    fn emit(&mut self, mut page: Vec<u8>, flags: u16, count: u16) -> io::Result<u64> {
        let id = self.next;
        let pages = page.len().div_ceil(PAGE_SIZE).max(1);
        let overflow = u32::try_from(pages - 1).map_err(|_| too_large("a page"))?;
        page.resize(pages * PAGE_SIZE, 0);
        page[0..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&flags.to_le_bytes());
        page[10..12].copy_from_slice(&count.to_le_bytes());
        page[12..16].copy_from_slice(&overflow.to_le_bytes());
        if let Some(out) = self.out.as_mut() {
            out.write_all(&page)?;
        }
        self.next += pages as u64;
        Ok(id)
    }
}

fn too_large(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} is too large for a bbolt page"),
    )
}

/// Writes the two meta pages and the empty freelist (pages 0 to 2), for a
/// file of `pages` pages whose root bucket's tree has its root at `root`.
pub fn write_head(out: &mut dyn Write, root: u64, pages: u64) -> io::Result<()> {
    for (id, txid) in [(0u64, TXID), (1, TXID - 1)] {
        let mut page = vec![0u8; PAGE_SIZE];
        page[0..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&META.to_le_bytes());
        let m = &mut page[HEADER..HEADER + 64];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        // flags (4 bytes) 0; the root bucket: root page, sequence 0.
        m[16..24].copy_from_slice(&root.to_le_bytes());
        m[32..40].copy_from_slice(&2u64.to_le_bytes()); // the freelist's page
        m[40..48].copy_from_slice(&pages.to_le_bytes());
        m[48..56].copy_from_slice(&txid.to_le_bytes());
        let sum = fnv64a(&m[..56]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        out.write_all(&page)?;
    }
    let mut freelist = vec![0u8; PAGE_SIZE];
    freelist[0..8].copy_from_slice(&2u64.to_le_bytes());
    freelist[8..10].copy_from_slice(&FREELIST.to_le_bytes());
    out.write_all(&freelist)
}

/// FNV-1a, 64 bits: the checksum of bbolt's meta pages.
pub fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One B+tree written as its elements arrive in key order.
pub struct Tree {
    /// The pending leaf: `(flags, key, value)`, and its size in bytes.
    leaf: Vec<(u32, Vec<u8>, Vec<u8>)>,
    leaf_bytes: usize,
    /// Pending branch pages, lowest level first.
    levels: Vec<Level>,
    last_key: Option<Vec<u8>>,
}

#[derive(Default)]
struct Level {
    /// `(first key of the child, child's page)`
    children: Vec<(Vec<u8>, u64)>,
    bytes: usize,
    written: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            leaf: Vec::new(),
            leaf_bytes: HEADER,
            levels: Vec::new(),
            last_key: None,
        }
    }

    /// Adds an element; keys must come in strictly increasing byte order
    /// (bbolt finds them by binary search).
    pub fn push(
        &mut self,
        out: &mut PageOut,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> io::Result<()> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bbolt keys must be written in increasing order",
            ));
        }
        if key.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
            return Err(too_large("an element"));
        }
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && self.leaf_bytes + size > PAGE_SIZE {
            self.flush_leaf(out)?;
        }
        self.leaf.push((flags, key.to_vec(), value.to_vec()));
        self.leaf_bytes += size;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    fn flush_leaf(&mut self, out: &mut PageOut) -> io::Result<()> {
        let elems = std::mem::take(&mut self.leaf);
        let mut page = vec![0u8; HEADER + ELEMENT * elems.len()];
        page.reserve(self.leaf_bytes.saturating_sub(page.len()));
        for (i, (flags, key, value)) in elems.iter().enumerate() {
            let at = HEADER + ELEMENT * i;
            let pos = u32::try_from(page.len() - at).map_err(|_| too_large("a leaf"))?;
            let e = &mut page[at..at + ELEMENT];
            e[0..4].copy_from_slice(&flags.to_le_bytes());
            e[4..8].copy_from_slice(&pos.to_le_bytes());
            e[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
            page.extend_from_slice(key);
            page.extend_from_slice(value);
        }
        self.leaf_bytes = HEADER;
        let count = u16::try_from(elems.len()).map_err(|_| too_large("a leaf's count"))?;
        let id = out.emit(page, LEAF, count)?;
        let first = elems
            .into_iter()
            .next()
            .map(|(_, k, _)| k)
            .unwrap_or_default();
        self.add_child(out, 0, first, id)
    }

    /// Adds a child page to the branch level `level`, writing that level's
    /// pending page first when the child does not fit.
    fn add_child(
        &mut self,
        out: &mut PageOut,
        level: usize,
        key: Vec<u8>,
        id: u64,
    ) -> io::Result<()> {
        if self.levels.len() == level {
            self.levels.push(Level {
                bytes: HEADER,
                ..Level::default()
            });
        }
        let size = ELEMENT + key.len();
        let l = &self.levels[level];
        if !l.children.is_empty() && l.bytes + size > PAGE_SIZE {
            self.flush_level(out, level)?;
        }
        let l = &mut self.levels[level];
        l.children.push((key, id));
        l.bytes += size;
        Ok(())
    }

    fn flush_level(&mut self, out: &mut PageOut, level: usize) -> io::Result<()> {
        let l = &mut self.levels[level];
        let children = std::mem::take(&mut l.children);
        l.bytes = HEADER;
        l.written += 1;
        let mut page = vec![0u8; HEADER + ELEMENT * children.len()];
        for (i, (key, child)) in children.iter().enumerate() {
            let at = HEADER + ELEMENT * i;
            let pos = u32::try_from(page.len() - at).map_err(|_| too_large("a branch"))?;
            let e = &mut page[at..at + ELEMENT];
            e[0..4].copy_from_slice(&pos.to_le_bytes());
            e[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            e[8..16].copy_from_slice(&child.to_le_bytes());
            page.extend_from_slice(key);
        }
        let count = u16::try_from(children.len()).map_err(|_| too_large("a branch's count"))?;
        let id = out.emit(page, BRANCH, count)?;
        let first = children
            .into_iter()
            .next()
            .map(|(k, _)| k)
            .unwrap_or_default();
        self.add_child(out, level + 1, first, id)
    }

    /// Writes what is pending, bottom-up; returns the tree's root page (an
    /// empty leaf for a tree without elements).
    pub fn finish(mut self, out: &mut PageOut) -> io::Result<u64> {
        if !self.leaf.is_empty() || self.levels.is_empty() {
            self.flush_leaf(out)?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            let l = &self.levels[level];
            if top && l.written == 0 && l.children.len() == 1 {
                return Ok(l.children[0].1);
            }
            if !l.children.is_empty() {
                self.flush_level(out, level)?;
            }
            level += 1;
        }
    }
}

/// A bucket's value in its parent's leaf: its root page and sequence 0.
pub fn bucket_value(root: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..8].copy_from_slice(&root.to_le_bytes());
    v
}

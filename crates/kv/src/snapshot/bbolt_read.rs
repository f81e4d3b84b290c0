//! A reader of bbolt database files: the top-level buckets of a snapshot
//! and their elements in key order (see [`super`]).
//!
//! What it reads: bbolt's version-2 files of any page size, the meta page
//! with the larger transaction id among those whose magic, version and
//! FNV-64a checksum are right, branch and leaf pages with their overflow
//! pages, page and inline buckets. It reads pages as it walks (no mmap, no
//! whole-file buffer), so memory stays at a page per tree level plus the
//! set of pages seen.
//!
//! What it does not: write, use the freelist, or trust the file: every
//! offset and length is checked against the page holding it, a page id
//! against the file's length, and a page met twice in one walk (a cycle, or
//! two parents) is an error, so a damaged file gives an error naming the
//! page, never a panic or a walk without end.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bbolt_write::{BRANCH, BUCKET_ELEMENT, ELEMENT, HEADER, LEAF, MAGIC, VERSION, fnv64a};
/// Deeper trees than this are damage (a 4 KiB page holds 100+ children).
const MAX_DEPTH: usize = 32;

/// What is wrong with a bbolt file.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a bbolt database: {reason}")]
    NotBolt { path: PathBuf, reason: String },
    #[error("{path}: page {page}: {reason}")]
    BadPage {
        path: PathBuf,
        page: u64,
        reason: String,
    },
}

/// What [`BoltFile::walk`] calls with each element: its flags, key and value.
pub type Visit<'a, E> = dyn FnMut(u32, &[u8], &[u8]) -> Result<(), E> + 'a;

/// An open bbolt file.
pub struct BoltFile {
    file: File,
    path: PathBuf,
    page_size: usize,
    /// Bytes of the file that belong to the database (without a trailer).
    len: u64,
    /// The root bucket's root page.
    root: u64,
}

/// A bucket found in the root bucket.
pub enum Bucket {
    /// Its tree's root page.
    Page(u64),
    /// Its elements in a page stored in its parent's value.
    Inline(Vec<u8>),
}

impl BoltFile {
    /// Opens the first `len` bytes of `path` as a bbolt file.
    pub fn open(path: &Path, len: u64) -> Result<BoltFile, BoltError> {
        let io = |source| BoltError::Io {
            path: path.to_owned(),
            source,
        };
        let not = |reason: String| BoltError::NotBolt {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io)?;
        let mut head = [0u8; HEADER + 64];
        if len < head.len() as u64 {
            return Err(not(format!("{len} bytes are too short")));
        }
        file.read_exact_at(&mut head, 0).map_err(io)?;
        let meta0 = parse_meta(&head[HEADER..]);
        // Meta 1 sits one page in; its page size is meta 0's, or etcd's 4 KiB when meta 0
        // is damaged.
        let page_size = match &meta0 {
            Ok(m) => m.page_size,
            Err(_) => 4096,
        };
        let mut head1 = [0u8; HEADER + 64];
        let meta1 = if len >= (page_size + head1.len()) as u64 {
            file.read_exact_at(&mut head1, page_size as u64)
                .map_err(io)?;
            parse_meta(&head1[HEADER..])
        } else {
            Err("missing".into())
        };
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(a), Err(b)) => return Err(not(format!("meta page 0: {a}; meta page 1: {b}"))),
        };
        if meta.pages.saturating_mul(meta.page_size as u64) > len {
            return Err(not(format!(
                "its meta page counts {} pages of {} bytes, more than the file's {len} bytes \
                 (truncated?)",
                meta.pages, meta.page_size
            )));
        }
        Ok(BoltFile {
            file,
            path: path.to_owned(),
            page_size: meta.page_size,
            len,
            root: meta.root,
        })
    }

    fn bad(&self, page: u64, reason: impl Into<String>) -> BoltError {
        BoltError::BadPage {
            path: self.path.clone(),
            page,
            reason: reason.into(),
        }
    }

    /// Page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        let ps = self.page_size as u64;
        let at = id
            .checked_mul(ps)
            .filter(|at| at.saturating_add(ps) <= self.len)
            .ok_or_else(|| self.bad(id, "past the end of the file"))?;
        let read = |buf: &mut [u8]| {
            self.file
                .read_exact_at(buf, at)
                .map_err(|source| BoltError::Io {
                    path: self.path.clone(),
                    source,
                })
        };
        let mut head = [0u8; HEADER];
        read(&mut head)?;
        let overflow = u64::from(u32::from_le_bytes(
            head[12..16].try_into().unwrap_or_default(),
        ));
        let size = (overflow + 1)
            .checked_mul(ps)
            .filter(|size| at.saturating_add(*size) <= self.len)
            .ok_or_else(|| self.bad(id, format!("{overflow} overflow pages run past the end")))?;
        let mut page = vec![0u8; size as usize];
        read(&mut page)?;
        Ok(page)
    }

    /// The top-level bucket named `name`, if the file has it.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        self.walk::<BoltError>(&Bucket::Page(self.root), &mut |flags, key, value| {
            if key == name && flags & BUCKET_ELEMENT != 0 {
                found = Some(value.to_vec());
            }
            Ok(())
        })?;
        let Some(value) = found else { return Ok(None) };
        if value.len() < 16 {
            return Err(self.bad(self.root, "a bucket's value is shorter than its header"));
        }
        let root = u64::from_le_bytes(value[0..8].try_into().unwrap_or_default());
        Ok(Some(if root == 0 {
            Bucket::Inline(value[16..].to_vec())
        } else {
            Bucket::Page(root)
        }))
    }

    /// Calls `f` with each element of `bucket` (its flags, key and value)
    /// in key order.
    pub fn walk<E: From<BoltError>>(&self, bucket: &Bucket, f: &mut Visit<'_, E>) -> Result<(), E> {
        match bucket {
            Bucket::Inline(page) => self.visit(0, page, &mut HashSet::new(), 0, f),
            Bucket::Page(root) => {
                let mut seen = HashSet::new();
                let page = self.page(*root).map_err(E::from)?;
                seen.insert(*root);
                self.visit(*root, &page, &mut seen, 0, f)
            }
        }
    }

    fn visit<E: From<BoltError>>(
        &self,
        id: u64,
        page: &[u8],
        seen: &mut HashSet<u64>,
        depth: usize,
        f: &mut Visit<'_, E>,
    ) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(self
                .bad(id, "the tree is deeper than any bbolt writes")
                .into());
        }
        if page.len() < HEADER {
            return Err(self.bad(id, "shorter than a page header").into());
        }
        let flags = u16::from_le_bytes([page[8], page[9]]);
        let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
        let field = |at: usize, i: usize| -> u32 {
            u32::from_le_bytes(
                page[at + 4 * i..at + 4 * i + 4]
                    .try_into()
                    .unwrap_or_default(),
            )
        };
        if HEADER + ELEMENT * count > page.len() {
            return Err(self
                .bad(id, format!("{count} elements do not fit the page"))
                .into());
        }
        let slice = |at: usize, pos: u32, len: u32| -> Result<&[u8], BoltError> {
            let start = at + pos as usize;
            page.get(start..start + len as usize)
                .ok_or_else(|| self.bad(id, "an element points outside its page"))
        };
        match flags {
            LEAF => {
                for i in 0..count {
                    let at = HEADER + ELEMENT * i;
                    let (eflags, pos, ksize, vsize) =
                        (field(at, 0), field(at, 1), field(at, 2), field(at, 3));
                    let key = slice(at, pos, ksize)?;
                    let value = slice(at + ksize as usize, pos, vsize)?;
                    f(eflags, key, value)?;
                }
                Ok(())
            }
            BRANCH => {
                for i in 0..count {
                    let at = HEADER + ELEMENT * i;
                    let child =
                        u64::from_le_bytes(page[at + 8..at + 16].try_into().unwrap_or_default());
                    if !seen.insert(child) {
                        return Err(self.bad(child, "reached twice in one tree").into());
                    }
                    let page = self.page(child).map_err(E::from)?;
                    self.visit(child, &page, seen, depth + 1, f)?;
                }
                Ok(())
            }
            other => Err(self
                .bad(id, format!("flags {other:#x}: not a branch or leaf page"))
                .into()),
        }
    }
}

struct Meta {
    page_size: usize,
    root: u64,
    pages: u64,
    txid: u64,
}

fn parse_meta(m: &[u8]) -> Result<Meta, String> {
    let u32_at = |at: usize| u32::from_le_bytes(m[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or_default());
    if u32_at(0) != MAGIC {
        return Err("no bbolt magic number".into());
    }
    if u32_at(4) != VERSION {
        return Err(format!("version {}, not {VERSION}", u32_at(4)));
    }
    let sum = u64_at(56);
    if sum != 0 && sum != fnv64a(&m[..56]) {
        return Err("its checksum does not match".into());
    }
    let page_size = u32_at(8) as usize;
    if !(1024..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(16),
        pages: u64_at(40),
        txid: u64_at(48),
    })
}

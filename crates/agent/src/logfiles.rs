//! A task's output files, capped and rotated: the writer ([`Rotator`], run by the task's shim
//! for a process task, and by `torc container-log` for a container) and the reader
//! ([`read`], the agent API's `/v1/tasks/{id}/logs`).
//!
//! Layout, per stream (`stdout`, `stderr`) in the task's sandbox: the current file `stdout`,
//! the rotated ones `stdout.1` (newest) ... `stdout.N`, and `.stdout.base`, the offset of the
//! current file's first byte in everything the task wrote to the stream, as decimal text.
//! Offsets count from the task's first byte, so a reader that follows (`torc logs -f`) asks
//! for the next offset and gets it whether or not the files were rotated meanwhile.
//!
//! Invariants:
//! - No file passes the cap (`max_bytes`), and at most `files` rotated files stay: a stream
//!   takes at most `max_bytes × (files + 1)` bytes on disk. A file is cut after the last line
//!   end that fits, or at the cap when a line is longer.
//! - A rotated file is never written again; the writer changes `.stdout.base` and the set of
//!   files only under an exclusive lock of `.stdout.base`, and a reader opens the files and
//!   reads the base under a shared one, so a reader never sees a file at another offset than
//!   its own (it holds the lock for a few system calls only; reading happens after).
//! - The writer never stops reading its input: the task never waits on rotation (renames and
//!   one file creation, under the lock) nor on a failed write. What is lost at most: the
//!   output the disk refused (a full disk, an I/O error: counted, and the count written into
//!   the stream as a line `[torc: N bytes of output lost: the disk refused them]` once the
//!   disk takes bytes again), and output older than the rotated files kept. A reader that
//!   asks for an offset rotated away gets the oldest kept instead (`kept_from`). A task that
//!   writes faster than the copier for long fills its pipe (1 MiB) and then waits, as it
//!   would on a slow disk: the copy is a read and a write per 128 KiB (measured in
//!   `benches/logs.rs`).
//! - A sandbox without `.stdout.base` (made by an agent before rotation) reads as one file
//!   starting at offset 0.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use torc_types::LogCap;

/// The file holding the base offset of `name`, and the lock of its set of files.
fn base_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.base"))
}

fn rotated_path(dir: &Path, name: &str, k: u32) -> PathBuf {
    dir.join(format!("{name}.{k}"))
}

fn open_append(path: &Path, truncate: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
}

/// Writes one stream of a task's output into capped, rotated files (see the module doc).
pub struct Rotator {
    dir: PathBuf,
    name: String,
    cap: LogCap,
    /// The current file; `None` after a rotation could not create it (retried at each write).
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The offset of the current file's first byte.
    base: u64,
    /// `.<name>.base`: the base, and the lock of the set of files.
    lock: File,
    /// Bytes the disk refused since the last successful write.
    lost: u64,
}

impl Rotator {
    /// Opens (or creates) the stream `name` in `dir`, appending to its current file.
    pub fn open(dir: &Path, name: &str, mut cap: LogCap) -> io::Result<Rotator> {
        // A cap of 0 would never let a byte in.
        cap.max_bytes = cap.max_bytes.max(1);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(base_path(dir, name))?;
        let base = read_base(&lock)?;
        let file = open_append(&dir.join(name), false)?;
        let size = file.metadata()?.len();
        Ok(Rotator {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cap,
            file: Some(file),
            size,
            base,
            lock,
            lost: 0,
        })
    }

    /// Everything written so far (the offset of the next byte).
    #[cfg(test)]
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Bytes lost since the last write that succeeded.
    #[cfg(test)]
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Writes `buf`, rotating whenever the current file is full. Never fails: what the disk
    /// refuses is counted ([`Rotator::lost`]) and dropped, so the caller keeps reading; the
    /// count is written into the stream as a line of its own once the disk takes bytes again.
    pub fn write(&mut self, buf: &[u8]) {
        if self.lost > 0 {
            // Said in the stream itself, once the disk takes bytes again.
            let lost = std::mem::take(&mut self.lost);
            let note = format!("[torc: {lost} bytes of output lost: the disk refused them]\n");
            self.write_capped(note.as_bytes());
            if self.lost > 0 {
                self.lost = lost;
            }
        }
        self.write_capped(buf);
    }

    fn write_capped(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let room = self.cap.max_bytes.saturating_sub(self.size);
            if buf.len() as u64 <= room {
                self.put(buf);
                return;
            }
            // Cut after the last line end that fits, else at the cap.
            let fits = &buf[..room as usize];
            let cut = match fits.iter().rposition(|b| *b == b'\n') {
                Some(at) => at + 1,
                None => fits.len(),
            };
            self.put(&buf[..cut]);
            buf = &buf[cut..];
            self.rotate();
        }
    }

    fn put(&mut self, buf: &[u8]) {
        if self.file.is_none() {
            self.file = open_append(&self.dir.join(&self.name), false).ok();
            self.size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
        }
        let Some(file) = &mut self.file else {
            self.lost += buf.len() as u64;
            return;
        };
        match file.write_all(buf) {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.lost = 0;
            }
            Err(_) => {
                // What reached the file counts; the rest is lost. The file is opened again at
                // the next write (a full disk may have room by then, or the file be replaced).
                let now = file.metadata().map_or(self.size, |m| m.len());
                let written = now.saturating_sub(self.size).min(buf.len() as u64);
                self.size += written;
                self.lost += buf.len() as u64 - written;
                self.file = None;
            }
        }
    }

    /// The current file becomes `name.1` (and each `name.k` becomes `name.k+1`, the oldest
    /// dropped), a new current file starts at the old end.
    fn rotate(&mut self) {
        if self.size == 0 {
            return;
        }
        // Readers hold the shared lock only while they open files: a short wait at most.
        let locked = self.lock.lock();
        let current = self.dir.join(&self.name);
        if self.cap.files == 0 {
            let _ = std::fs::remove_file(&current);
        } else {
            for k in (1..self.cap.files).rev() {
                let _ = std::fs::rename(
                    rotated_path(&self.dir, &self.name, k),
                    rotated_path(&self.dir, &self.name, k + 1),
                );
            }
            let _ = std::fs::rename(&current, rotated_path(&self.dir, &self.name, 1));
        }
        self.base += self.size;
        self.size = 0;
        self.file = open_append(&current, true).ok();
        let text = self.base.to_string();
        let _ = self
            .lock
            .set_len(0)
            .and_then(|()| self.lock.write_all_at(text.as_bytes(), 0));
        if locked.is_ok() {
            let _ = self.lock.unlock();
        }
    }
}

/// Copies the task's stdout and stderr into rotated files of `dir`, one thread each; each
/// sends on the channel when its pipe has ended.
pub fn copy_output(
    dir: &Path,
    cap: torc_types::LogCap,
    out: std::os::fd::OwnedFd,
    err: std::os::fd::OwnedFd,
) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (name, fd) in [("stdout", out), ("stderr", err)] {
        let tx = tx.clone();
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name(format!("copy-{name}"))
            .spawn(move || {
                copy_stream(&dir, name, cap, fd);
                let _ = tx.send(());
            });
        // Without its copier a stream's pipe fills and its writer waits: said where the
        // caller's stderr still goes (the shim's own: the stderr file before the task runs).
        if let Err(e) = spawned {
            eprintln!("torc: cannot start the copier of the task's {name}: {e}");
        }
    }
    rx
}

/// Reads `fd` to its end into the rotated files `name` of `dir`. Never stops reading before
/// the end: output the disk refuses is dropped and noted in the stream (see [`Rotator`]).
/// Says nothing on its own stderr, which may be the very pipe it drains (the shim's).
fn copy_stream(dir: &Path, name: &str, cap: torc_types::LogCap, fd: std::os::fd::OwnedFd) {
    use std::io::Read as _;
    let mut pipe = std::fs::File::from(fd);
    // Without its base file (the sandbox is gone) the stream is read and dropped.
    let mut rotator = Rotator::open(dir, name, cap).ok();
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if let Some(r) = &mut rotator {
            r.write(&buf[..n]);
        }
    }
}

/// `torc` as containerd's logging program for a container's output (`binary://` log URI, see
/// `torc_containerd::TaskIo::Logger`): copies descriptors 3 (stdout) and 4 (stderr) into
/// rotated files of `dir` until both end, after closing descriptor 5 to say it is ready. The
/// SIGTERM the shim sends when the task is deleted is ignored: the copy ends with the pipes
/// (or at the shim's SIGKILL, 12 s later). Returns the process's exit code.
pub fn container_log(dir: &Path, cap: LogCap) -> i32 {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    for fd in [3, 4, 5] {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
            eprintln!(
                "torc: container-log runs as containerd's logging program, with the container's output on descriptors 3 and 4 and descriptor 5 to close when ready; descriptor {fd} is not open"
            );
            return 2;
        }
    }
    // SAFETY: SIG_IGN installs no handler of ours; no thread runs yet.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    // SAFETY: the descriptors were checked open above and are this process's alone (the shim
    // passed them for this purpose); each is owned once.
    let (out, err, ready) = unsafe {
        (
            OwnedFd::from_raw_fd(3),
            OwnedFd::from_raw_fd(4),
            OwnedFd::from_raw_fd(5),
        )
    };
    let done = copy_output(dir, cap, out, err);
    drop(ready);
    for _ in 0..2 {
        if done.recv().is_err() {
            break;
        }
    }
    0
}

fn read_base(file: &File) -> io::Result<u64> {
    let mut text = String::new();
    (&*file).seek(SeekFrom::Start(0))?;
    (&*file).read_to_string(&mut text)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the log's base offset {text:?} is not a number"),
        )
    })
}

/// A piece of a stream, read across its files.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    /// The offset of `data`'s first byte.
    pub offset: u64,
    pub data: Vec<u8>,
    /// The end of the stream when read.
    pub end: u64,
    /// The oldest offset still kept.
    pub kept_from: u64,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub enum From {
    /// At this offset (or the oldest kept, if it was rotated away).
    Offset(u64),
    /// This many bytes before the end (or at the oldest kept).
    Tail(u64),
}

/// Reads at most `most` bytes of the stream `name` in `dir`, from `from`, across the current
/// and the rotated files.
pub fn read(dir: &Path, name: &str, from: From, most: u64) -> io::Result<Piece> {
    // The files, oldest first, each with its offset: opened under the shared lock, so their
    // offsets agree with the base read with them.
    let mut files: Vec<(u64, u64, File)> = Vec::new();
    let (base, current) = match File::open(base_path(dir, name)) {
        Ok(lock) => {
            lock.lock_shared()?;
            let base = read_base(&lock);
            let current = File::open(dir.join(name));
            let mut rotated = Vec::new();
            for k in 1..=torc_types::logs::MAX_LOG_FILES {
                match File::open(rotated_path(dir, name, k)) {
                    Ok(f) => rotated.push(f),
                    Err(_) => break,
                }
            }
            lock.unlock()?;
            files.extend(rotated.into_iter().map(|f| (0, 0, f)));
            (base?, current?)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0, File::open(dir.join(name))?),
        Err(e) => return Err(e),
    };
    // Rotated files are complete: each ends where the next newer one starts.
    let mut start = base;
    for (at, len, f) in files.iter_mut() {
        *len = f.metadata()?.len();
        start = start.saturating_sub(*len);
        *at = start;
    }
    files.reverse();
    let current_len = current.metadata()?.len();
    files.push((base, current_len, current));
    let kept_from = files.first().map_or(base, |(at, _, _)| *at);
    let end = base + current_len;
    let first = match from {
        From::Offset(o) => o.clamp(kept_from, end),
        From::Tail(n) => end.saturating_sub(n).max(kept_from),
    };
    let mut data = Vec::new();
    let mut at = first;
    for (file_at, len, f) in &files {
        let file_end = file_at + len;
        if at >= file_end || data.len() as u64 >= most {
            continue;
        }
        let want = (file_end - at).min(most - data.len() as u64);
        let mut f = f;
        f.seek(SeekFrom::Start(at - file_at))?;
        let got = f.take(want).read_to_end(&mut data)? as u64;
        at += got;
        if got < want {
            break;
        }
    }
    Ok(Piece {
        offset: first,
        data,
        end,
        kept_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max_bytes: u64, files: u32) -> LogCap {
        LogCap { max_bytes, files }
    }

    fn lines(from: u32, to: u32) -> String {
        (from..to).map(|i| format!("line {i:05}\n")).collect()
    }

    /// Files stay under the cap, cut at line ends, at most `files` rotated; a read across the
    /// files gives back exactly what was written where it is still kept.
    #[test]
    fn rotation_caps_the_files_and_reads_span_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Rotator::open(dir.path(), "stdout", cap(4096, 2)).unwrap();
        let all = lines(0, 3000); // 11 bytes a line, 33,000 bytes
        for chunk in all.as_bytes().chunks(1000) {
            w.write(chunk);
        }
        assert_eq!(w.end(), all.len() as u64);
        for name in ["stdout", "stdout.1", "stdout.2"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 4096, "{name}: {}", text.len());
            assert!(text.ends_with('\n'), "{name} is cut at a line end");
        }
        assert!(!dir.path().join("stdout.3").exists());

        let tail = read(dir.path(), "stdout", From::Tail(6000), 1 << 20).unwrap();
        assert_eq!(tail.end, all.len() as u64);
        assert_eq!(tail.offset, all.len() as u64 - 6000);
        assert_eq!(tail.data, &all.as_bytes()[tail.offset as usize..]);
        // Everything kept, from an offset long rotated away.
        let kept = read(dir.path(), "stdout", From::Offset(0), 1 << 20).unwrap();
        assert!(kept.kept_from > 0 && kept.kept_from == kept.offset);
        assert!(all.len() as u64 - kept.kept_from <= 3 * 4096);
        assert_eq!(kept.data, &all.as_bytes()[kept.kept_from as usize..]);
        // A bounded read continues where it stopped, across a file boundary.
        let first = read(dir.path(), "stdout", From::Offset(kept.kept_from), 5000).unwrap();
        let next = read(
            dir.path(),
            "stdout",
            From::Offset(first.offset + 5000),
            1 << 20,
        )
        .unwrap();
        assert_eq!([first.data, next.data].concat(), kept.data);
    }

    /// A follower reading by offset sees every byte once, whatever rotates between its reads;
    /// a writer reopened (as after a restart of its process) goes on at the same offsets.
    #[test]
    fn a_follower_loses_and_repeats_nothing_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Rotator::open(dir.path(), "stderr", cap(4096, 1)).unwrap();
        let mut seen = Vec::new();
        let mut next = 0;
        let mut written = Vec::new();
        for round in 0..40 {
            let text = lines(round * 50, round * 50 + 50);
            w.write(text.as_bytes());
            written.extend_from_slice(text.as_bytes());
            if round == 20 {
                drop(w);
                w = Rotator::open(dir.path(), "stderr", cap(4096, 1)).unwrap();
            }
            let piece = read(dir.path(), "stderr", From::Offset(next), 1 << 20).unwrap();
            assert_eq!(
                piece.offset, next,
                "round {round}: nothing rotated away unread"
            );
            next = piece.offset + piece.data.len() as u64;
            seen.extend(piece.data);
        }
        assert_eq!(seen, written);
    }

    /// Output the disk refuses is dropped and counted, and the count is said in the stream
    /// once the disk takes bytes again (`/dev/full` refuses every write).
    #[test]
    fn refused_output_is_counted_in_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("stdout")).unwrap();
        let mut w = Rotator::open(dir.path(), "stdout", cap(4096, 1)).unwrap();
        w.write(b"lost line\n");
        w.write(b"another\n");
        assert_eq!(w.lost(), 18);
        std::fs::remove_file(dir.path().join("stdout")).unwrap();
        w.write(b"kept\n");
        assert_eq!(w.lost(), 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdout")).unwrap(),
            "[torc: 18 bytes of output lost: the disk refused them]\nkept\n"
        );
    }

    /// Without rotated files (`files: 0`) the stream keeps the current file only, and a line
    /// longer than the cap is cut at the cap.
    #[test]
    fn no_rotated_files_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Rotator::open(dir.path(), "stdout", cap(4096, 0)).unwrap();
        w.write(&vec![b'x'; 10_000]);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n == "stdout.1"), "{names:?}");
        let piece = read(dir.path(), "stdout", From::Tail(1 << 20), 1 << 20).unwrap();
        assert_eq!((piece.kept_from, piece.end), (8192, 10_000));
        assert_eq!(piece.data.len(), 10_000 - 8192);
        // An old sandbox's single file reads as before.
        std::fs::write(dir.path().join("old"), "hello\n").unwrap();
        let old = read(dir.path(), "old", From::Tail(3), 1 << 20).unwrap();
        assert_eq!(
            (old.offset, old.data.as_slice(), old.end),
            (3, &b"lo\n"[..], 6)
        );
    }
}

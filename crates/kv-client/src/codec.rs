//! The gRPC codec of every generated service and client: prost's, with a
//! smaller starting buffer. torc kv serves with it (and encodes its watch
//! responses with it); clients call with it.
//!
//! tonic gives each call an 8 KiB buffer to decode its request into and
//! another to encode its response into. Most etcd requests and responses are
//! a few hundred bytes, and allocators keep their fast per-thread caches for
//! small blocks (glibc's up to about 1 KiB): every 8 KiB buffer went to the
//! shared heap and back. With 1 KiB buffers, torc kv gave 64 clients putting ~7%
//! more durable puts/s out of one core (fresh servers, 3 rounds each: 27.1–29.5k
//! before, 29.1–32.0k after). Buffers still grow as a message needs, so large
//! ranges and watch batches are unaffected.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Within glibc's thread cache (blocks up to 1,032 bytes).
const BUFFER_SIZE: usize = 1024;
/// tonic's default: a streaming response yields its buffer to the
/// transport once this much is encoded.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_SIZE`] buffers; the generated code
/// names it through `codec_path` (see `build.rs`).
#[derive(Debug)]
pub struct KvCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for KvCodec<T, U> {
    fn default() -> Self {
        KvCodec(PhantomData)
    }
}

impl<T, U> Codec for KvCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

//! [`CudaBackend`]: the kernels of `kernels/cuda/` on an NVIDIA GPU through cudarc.
//!
//! Everything CUDA is loaded at run time: the driver (libcuda) and NVRTC (libnvrtc) are
//! looked for before any call that would panic without them, and their absence is an error
//! that says what is missing. The kernel source is compiled once per source digest and
//! compute capability and the PTX cached on disk. Proving-key points stay resident on the
//! device across proofs, keyed by where they live in host memory plus a sample of their
//! contents.

// cudarc's launches and library probes are `unsafe`: the kernels' argument lists are
// checked here by hand against `msm.cu` / `ntt.cu`, and mirrored by the emulation test.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ark_bn254::{Fr, G1Affine, G1Projective, G2Affine, G2Projective};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::layout::{self, MsmPlan, NttTables, FR_WORDS};
use crate::error::{KernelError, Result};
use crate::msm::FixedBaseTable;
use crate::prover::ProverBackend;
use crate::raw::{Points, RawPoint};

const THREADS: u32 = 256;
/// Resident base sets kept before the oldest are dropped.
const MAX_RESIDENT: usize = 64;

const KERNELS: &[&str] = &[
    "msm_digits",
    "msm_chunk_sums",
    "msm_chunk_scan",
    "msm_offsets",
    "msm_scatter",
    "msm_accumulate_g1",
    "msm_fixup_g1",
    "msm_reduce_g1",
    "msm_window_sum_g1",
    "msm_ones_g1",
    "msm_tree_g1",
    "msm_accumulate_g2",
    "msm_fixup_g2",
    "msm_reduce_g2",
    "msm_window_sum_g2",
    "msm_ones_g2",
    "msm_tree_g2",
    "ntt_bitrev",
    "ntt_stage",
    "ntt_scale",
    "quotient_pointwise",
];

fn err(reason: impl Into<String>) -> KernelError {
    KernelError::Backend {
        backend: "cuda".into(),
        reason: reason.into(),
    }
}

fn drv(what: &str) -> impl Fn(DriverError) -> KernelError + '_ {
    move |e| err(format!("{what}: {e:?}"))
}

fn cfg(threads: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (threads.div_ceil(THREADS as u64).max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The two groups the MSM kernels serve.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Group {
    G1,
    G2,
}

impl Group {
    fn suffix(self) -> &'static str {
        match self {
            Group::G1 => "g1",
            Group::G2 => "g2",
        }
    }
    /// Words of one XYZZ point.
    fn xyzz_words(self) -> usize {
        match self {
            Group::G1 => 16,
            Group::G2 => 32,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct BaseKey {
    group: Group,
    addr: usize,
    len: usize,
    sample: [u8; 16],
}

struct Inner {
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    resident: HashMap<BaseKey, (u64, Arc<CudaSlice<u64>>)>,
    uses: u64,
    ntt: HashMap<u32, Arc<DeviceNtt>>,
}

struct DeviceNtt {
    tw_fwd: CudaSlice<u64>,
    tw_inv: CudaSlice<u64>,
    scale_in: CudaSlice<u64>,
    scale_out: CudaSlice<u64>,
    z_inv: CudaSlice<u64>,
}

/// Groth16's MSMs and NTTs on one GPU. One proof's work runs on one stream at a time.
pub struct CudaBackend {
    device: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.device)
            .finish()
    }
}

/// Where compiled PTX is cached: `$PROVNET_CACHE_DIR`, else `$XDG_CACHE_HOME/provnet`, else
/// `~/.cache/provnet`, else the system temp dir.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PROVNET_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("provnet");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("provnet");
    }
    std::env::temp_dir().join("provnet")
}

/// Whether NVRTC can be loaded (the compile check and the backend both need it).
pub fn nvrtc_present() -> bool {
    preload_nvrtc();
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC comes with the CUDA toolkit, whose lib folder is often not on the loader's path
/// (/usr/local/cuda/lib64). When the library cannot be found by name, it is loaded once,
/// globally, from `$PROVNET_NVRTC_DIR`, `$CUDA_HOME/lib64`, `$CUDA_PATH/lib64` or
/// /usr/local/cuda/lib64; cudarc's later load by name then finds it in the process.
#[cfg(not(unix))]
fn preload_nvrtc() {}

#[cfg(unix)]
fn preload_nvrtc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: only tries to dlopen the library by its usual names.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = std::env::var_os("PROVNET_NVRTC_DIR") {
            dirs.push(d.into());
        }
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(d) = std::env::var_os(var) {
                dirs.push(PathBuf::from(d).join("lib64"));
            }
        }
        dirs.push("/usr/local/cuda/lib64".into());
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut libs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libnvrtc.so"))
                })
                .collect();
            libs.sort();
            for lib in libs {
                use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
                // SAFETY: NVRTC's initialisers have no preconditions; the library stays
                // loaded for the life of the process (forgotten, never closed).
                if let Ok(l) = unsafe { Library::open(Some(&lib), RTLD_NOW | RTLD_GLOBAL) } {
                    std::mem::forget(l);
                    tracing::debug!(target: "prover", path = %lib.display(), "loaded NVRTC");
                    return;
                }
            }
        }
    });
}

/// Compiles the kernels for `arch` (e.g. "compute_90") with NVRTC.
pub fn compile(arch: &str) -> Result<Ptx> {
    compile_source(&super::source(), arch)
}

/// Compiles CUDA C `src` for `arch` with NVRTC.
pub fn compile_source(src: &str, arch: &str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(err(
            "CUDA's NVRTC library (libnvrtc.so) was not found: install the CUDA toolkit, or \
             the nvidia-cuda-nvrtc-cu12 wheel, and name its lib folder in PROVNET_NVRTC_DIR \
             (or LD_LIBRARY_PATH)",
        ));
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()],
        name: Some("provnet_bn254.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts).map_err(|e| err(format!("NVRTC: {e}")))
}

fn load_ptx(arch: &str) -> Result<Ptx> {
    let path = cache_dir().join(format!("kernels-{}-{arch}.ptx", super::source_digest()));
    if let Ok(text) = std::fs::read_to_string(&path) {
        tracing::debug!(target: "prover", path = %path.display(), "cached PTX");
        return Ok(Ptx::from_src(text));
    }
    let t = std::time::Instant::now();
    let ptx = compile(arch)?;
    tracing::info!(target: "prover", arch, ms = t.elapsed().as_millis() as u64, "compiled the GPU kernels");
    // A cache we cannot write only costs the next start a compile.
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, ptx.to_src())?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(target: "prover", path = %path.display(), "caching PTX: {e}");
    }
    Ok(ptx)
}

impl CudaBackend {
    /// Opens GPU `ordinal`, or says why it cannot: no driver, no GPU, no NVRTC, or a
    /// compile or load failure. Never panics for want of CUDA.
    pub fn open(ordinal: usize) -> Result<CudaBackend> {
        // SAFETY: only tries to dlopen libcuda by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(err(
                "no CUDA driver (libcuda.so) on this machine: no NVIDIA GPU or driver",
            ));
        }
        let count = CudaContext::device_count().map_err(drv("counting GPUs"))?;
        if ordinal as i64 >= count as i64 {
            return Err(err(format!(
                "the CUDA driver sees {count} GPU(s); GPU {ordinal} does not exist"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("creating a CUDA context"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        let device = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        let ptx = load_ptx(&format!("compute_{major}{minor}"))?;
        let module = ctx.load_module(ptx).map_err(drv("loading the kernels"))?;
        let mut funcs = HashMap::new();
        for name in KERNELS {
            let f = module.load_function(name).map_err(drv(name))?;
            funcs.insert(*name, f);
        }
        tracing::info!(target: "prover", device, sm = format!("{major}.{minor}"), "CUDA backend ready");
        Ok(CudaBackend {
            device,
            inner: Mutex::new(Inner {
                stream: ctx.default_stream(),
                _module: module,
                funcs,
                resident: HashMap::new(),
                uses: 0,
                ntt: HashMap::new(),
            }),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| err("a previous GPU call panicked"))
    }
}

impl Inner {
    fn f(&self, name: &str) -> &CudaFunction {
        self.funcs
            .get(name)
            .expect("every kernel is loaded at open")
    }

    /// The device copy of a base set, uploaded on first use.
    fn bases(
        &mut self,
        key: BaseKey,
        upload: impl FnOnce() -> Vec<u64>,
    ) -> Result<Arc<CudaSlice<u64>>> {
        self.uses += 1;
        let now = self.uses;
        if let Some((used, buf)) = self.resident.get_mut(&key) {
            *used = now;
            return Ok(buf.clone());
        }
        if self.resident.len() >= MAX_RESIDENT {
            let oldest = self
                .resident
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.resident.remove(&k);
            }
        }
        let buf = Arc::new(
            self.stream
                .clone_htod(&upload())
                .map_err(drv("uploading bases"))?,
        );
        self.resident.insert(key, (now, buf.clone()));
        Ok(buf)
    }

    /// Runs the MSM pipeline of `msm.cu` for every scalar vector in `sets` (all of the
    /// bases' length) in one pass; per set, the window sums and the +-1 partial sums as XYZZ
    /// words (combined on the host).
    #[allow(clippy::type_complexity)]
    fn msm(
        &mut self,
        group: Group,
        bases: &CudaSlice<u64>,
        sets: &[&[Fr]],
    ) -> Result<(MsmPlan, Vec<(Vec<u64>, Vec<u64>)>)> {
        let n_sets = sets.len();
        let p = MsmPlan::new(sets.first().map_or(0, |s| s.len()))?;
        if sets.iter().any(|s| s.len() != p.n as usize) {
            return Err(err("batched MSM over scalar vectors of different lengths"));
        }
        let count = u32::try_from(n_sets as u64 * p.n as u64)
            .map_err(|_| err("batched MSM beyond 2^32 scalars"))?;
        let sets32 = n_sets as u32;
        let s = self.stream.clone();
        let xw = group.xyzz_words() as u64;
        let n = p.n as u64;
        let slots = p.windows * sets32;
        let sl = slots as u64;
        let zeros_u32 = |len: u64| s.alloc_zeros::<u32>(len.max(1) as usize);
        let zeros_u64 = |len: u64| s.alloc_zeros::<u64>(len.max(1) as usize);
        let words: Vec<u64> = sets.iter().flat_map(|v| layout::fr_words(v)).collect();
        let sc = s.clone_htod(&words).map_err(drv("uploading scalars"))?;
        let a = drv("allocating MSM buffers");
        let acc_threads = (sl * n).div_ceil(p.k as u64);
        let mut digit = zeros_u32(sl * n).map_err(&a)?;
        let mut counts = zeros_u32(sl * p.nb as u64).map_err(&a)?;
        let mut ones = zeros_u32(count as u64).map_err(&a)?;
        let mut ones_len = zeros_u32(n_sets as u64).map_err(&a)?;
        let mut max_window = zeros_u32(1).map_err(&a)?;
        let mut chunk_sum = zeros_u32(sl * p.scan_chunks() as u64).map_err(&a)?;
        let mut offsets = zeros_u32(sl * p.nb as u64).map_err(&a)?;
        let mut cursor = zeros_u32(sl * p.nb as u64).map_err(&a)?;
        let mut sorted = zeros_u32(sl * n).map_err(&a)?;
        let mut key = zeros_u32(sl * n).map_err(&a)?;
        let mut bucket = zeros_u64(sl * p.nb as u64 * xw).map_err(&a)?;
        let mut first = zeros_u64(acc_threads * xw).map_err(&a)?;
        let mut last = zeros_u64(acc_threads * xw).map_err(&a)?;
        let mut seg = zeros_u64(sl * p.segs as u64 * xw).map_err(&a)?;
        let mut wout = zeros_u64(sl * xw).map_err(&a)?;
        let mut per = n.div_ceil(p.k as u64);
        let mut parts = zeros_u64(n_sets as u64 * per * xw).map_err(&a)?;
        let l = drv("launching an MSM kernel");
        let g = group.suffix();
        let (c, windows, nb, chunk, chunks, k, segs) = (
            p.c,
            p.windows,
            p.nb,
            p.scan_chunk,
            p.scan_chunks(),
            p.k,
            p.segs,
        );
        // SAFETY (every launch below): argument lists match the kernels' signatures in
        // msm.cu, and every buffer is at least as long as the plan's geometry makes the
        // kernel read or write (the emulation test runs the same sequence).
        unsafe {
            s.launch_builder(self.f("msm_digits"))
                .arg(&sc)
                .arg(&count)
                .arg(&p.n)
                .arg(&c)
                .arg(&windows)
                .arg(&mut digit)
                .arg(&mut counts)
                .arg(&mut ones)
                .arg(&mut ones_len)
                .arg(&mut max_window)
                .launch(cfg(count as u64))
                .map_err(&l)?;
            s.launch_builder(self.f("msm_chunk_sums"))
                .arg(&counts)
                .arg(&slots)
                .arg(&nb)
                .arg(&chunk)
                .arg(&mut chunk_sum)
                .launch(cfg(sl * chunks as u64))
                .map_err(&l)?;
            s.launch_builder(self.f("msm_chunk_scan"))
                .arg(&mut chunk_sum)
                .arg(&slots)
                .arg(&chunks)
                .launch(cfg(sl))
                .map_err(&l)?;
            s.launch_builder(self.f("msm_offsets"))
                .arg(&counts)
                .arg(&chunk_sum)
                .arg(&slots)
                .arg(&nb)
                .arg(&chunk)
                .arg(&mut offsets)
                .arg(&mut cursor)
                .launch(cfg(sl * chunks as u64))
                .map_err(&l)?;
            s.launch_builder(self.f("msm_scatter"))
                .arg(&digit)
                .arg(&count)
                .arg(&p.n)
                .arg(&windows)
                .arg(&nb)
                .arg(&mut cursor)
                .arg(&mut sorted)
                .arg(&mut key)
                .launch(cfg(count as u64))
                .map_err(&l)?;
            s.launch_builder(self.f(&format!("msm_accumulate_{g}")))
                .arg(bases)
                .arg(&sorted)
                .arg(&key)
                .arg(&offsets)
                .arg(&counts)
                .arg(&p.n)
                .arg(&slots)
                .arg(&nb)
                .arg(&k)
                .arg(&mut bucket)
                .arg(&mut first)
                .arg(&mut last)
                .launch(cfg(acc_threads))
                .map_err(&l)?;
            s.launch_builder(self.f(&format!("msm_fixup_{g}")))
                .arg(&offsets)
                .arg(&counts)
                .arg(&p.n)
                .arg(&slots)
                .arg(&nb)
                .arg(&k)
                .arg(&mut bucket)
                .arg(&first)
                .arg(&last)
                .launch(cfg(sl * nb as u64))
                .map_err(&l)?;
            s.launch_builder(self.f(&format!("msm_reduce_{g}")))
                .arg(&bucket)
                .arg(&slots)
                .arg(&windows)
                .arg(&max_window)
                .arg(&nb)
                .arg(&segs)
                .arg(&mut seg)
                .launch(cfg(sl * segs as u64))
                .map_err(&l)?;
            s.launch_builder(self.f(&format!("msm_window_sum_{g}")))
                .arg(&seg)
                .arg(&slots)
                .arg(&segs)
                .arg(&mut wout)
                .launch(cfg(sl))
                .map_err(&l)?;
            s.launch_builder(self.f(&format!("msm_ones_{g}")))
                .arg(bases)
                .arg(&ones)
                .arg(&ones_len)
                .arg(&sets32)
                .arg(&p.n)
                .arg(&k)
                .arg(&mut parts)
                .launch(cfg(n_sets as u64 * per))
                .map_err(&l)?;
        }
        while per > 64 {
            let next = per.div_ceil(k as u64);
            let mut out = zeros_u64(n_sets as u64 * next * xw).map_err(&a)?;
            let per32 = per as u32;
            // SAFETY: as above (msm_tree_*).
            unsafe {
                s.launch_builder(self.f(&format!("msm_tree_{g}")))
                    .arg(&parts)
                    .arg(&sets32)
                    .arg(&per32)
                    .arg(&k)
                    .arg(&mut out)
                    .launch(cfg(n_sets as u64 * next))
                    .map_err(&l)?;
            }
            parts = out;
            per = next;
        }
        let d = drv("downloading MSM results");
        let windows_out = s.clone_dtoh(&wout).map_err(&d)?;
        let parts_out = s.clone_dtoh(&parts).map_err(&d)?;
        let (ww, pw) = (windows as usize * xw as usize, per as usize * xw as usize);
        let out = (0..n_sets)
            .map(|k| {
                (
                    windows_out[k * ww..(k + 1) * ww].to_vec(),
                    parts_out[k * pw..(k + 1) * pw].to_vec(),
                )
            })
            .collect();
        Ok((p, out))
    }

    fn ntt_tables(&mut self, log_n: u32) -> Result<Arc<DeviceNtt>> {
        if let Some(t) = self.ntt.get(&log_n) {
            return Ok(t.clone());
        }
        let t = NttTables::new(log_n)?;
        let up = |v: &Vec<u64>| {
            self.stream
                .clone_htod(v)
                .map_err(drv("uploading NTT tables"))
        };
        let dev = Arc::new(DeviceNtt {
            tw_fwd: up(&t.tw_fwd)?,
            tw_inv: up(&t.tw_inv)?,
            scale_in: up(&t.scale_in)?,
            scale_out: up(&t.scale_out)?,
            z_inv: up(&t.z_inv)?,
        });
        self.ntt.insert(log_n, dev.clone());
        Ok(dev)
    }

    /// In-place transform of `a` (bit-reverse, then log n butterfly stages).
    fn ntt(&self, a: &mut CudaSlice<u64>, log_n: u32, tw: &CudaSlice<u64>) -> Result<()> {
        let s = &self.stream;
        let n = 1u64 << log_n;
        let l = drv("launching an NTT kernel");
        // SAFETY: signatures as in ntt.cu; `a` holds n elements and `tw` n/2.
        unsafe {
            s.launch_builder(self.f("ntt_bitrev"))
                .arg(&mut *a)
                .arg(&log_n)
                .launch(cfg(n))
                .map_err(&l)?;
            let mut half = 1u32;
            while (half as u64) < n {
                s.launch_builder(self.f("ntt_stage"))
                    .arg(&mut *a)
                    .arg(tw)
                    .arg(&log_n)
                    .arg(&half)
                    .launch(cfg(n / 2))
                    .map_err(&l)?;
                half *= 2;
            }
        }
        Ok(())
    }

    fn scale(&self, a: &mut CudaSlice<u64>, by: &CudaSlice<u64>, n: u32) -> Result<()> {
        // SAFETY: ntt_scale(u64 *a, const u64 *s, u32 n); both hold n elements.
        unsafe {
            self.stream
                .launch_builder(self.f("ntt_scale"))
                .arg(&mut *a)
                .arg(by)
                .arg(&n)
                .launch(cfg(n as u64))
                .map_err(drv("launching ntt_scale"))?;
        }
        Ok(())
    }
}

/// A cheap identity for a base set: where it lives and a digest of three of its points.
fn base_key<P: RawPoint>(
    group: Group,
    bases: Points<'_, P>,
    words: fn(&[P]) -> Vec<u64>,
) -> BaseKey {
    key_of(group, bases.addr(), bases.len(), |i| words(&[bases.get(i)]))
}

/// The device words of a base set, decoded first where the points are raw.
fn base_words<P: RawPoint>(bases: Points<'_, P>, words: fn(&[P]) -> Vec<u64>) -> Vec<u64> {
    bases.with_slice(words)
}

/// [`base_key`] for a window table, whose points may be mapped rather than in a slice.
fn table_key(table: &FixedBaseTable) -> BaseKey {
    key_of(Group::G1, table.addr(), table.len(), |i| {
        layout::g1_words(&[table.point(i)])
    })
}

/// A key for `len` bases at `addr`, sampling the words of three of them.
fn key_of(group: Group, addr: usize, len: usize, words_at: impl Fn(usize) -> Vec<u64>) -> BaseKey {
    let mut h = blake3::Hasher::new();
    if len > 0 {
        for i in [0, len / 2, len - 1] {
            for w in words_at(i) {
                h.update(&w.to_le_bytes());
            }
        }
    }
    let mut sample = [0u8; 16];
    sample.copy_from_slice(&h.finalize().as_bytes()[..16]);
    BaseKey {
        group,
        addr,
        len,
        sample,
    }
}

impl CudaBackend {
    /// MSMs of every scalar vector in `sets` against one base set (uploaded on first use).
    fn msm_sets<G: ark_ec::CurveGroup>(
        &self,
        group: Group,
        key: BaseKey,
        upload: impl FnOnce() -> Vec<u64>,
        sets: &[&[Fr]],
        decode: fn(&[u64]) -> Result<G>,
    ) -> Result<Vec<G>> {
        let mut out = vec![G::zero(); sets.len()];
        // Empty vectors have nothing to do on the device.
        let live: Vec<usize> = (0..sets.len()).filter(|i| !sets[*i].is_empty()).collect();
        if live.is_empty() {
            return Ok(out);
        }
        let mut inner = self.lock()?;
        let bases = inner.bases(key, upload)?;
        let picked: Vec<&[Fr]> = live.iter().map(|i| sets[*i]).collect();
        let (p, results) = inner.msm(group, &bases, &picked)?;
        drop(inner);
        let x = group.xyzz_words();
        for (i, (w, parts)) in live.into_iter().zip(results) {
            let ws = w.chunks_exact(x).map(decode).collect::<Result<Vec<_>>>()?;
            let ps = parts
                .chunks_exact(x)
                .map(decode)
                .collect::<Result<Vec<_>>>()?;
            out[i] = layout::combine(&ws, &ps, p.c);
        }
        Ok(out)
    }
}

fn same_len(bases: usize, sets: &[&[Fr]]) -> Result<()> {
    match sets.iter().find(|s| s.len() != bases) {
        Some(s) => Err(err(format!("{} scalars for {bases} bases", s.len()))),
        None => Ok(()),
    }
}

fn one<G>(mut v: Vec<G>) -> G {
    v.pop().expect("one result per scalar vector")
}

impl ProverBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn msm_g1(&self, bases: &[G1Affine], scalars: &[Fr]) -> Result<G1Projective> {
        self.msm_g1_many(Points::Slice(bases), &[scalars]).map(one)
    }

    fn msm_g2(&self, bases: &[G2Affine], scalars: &[Fr]) -> Result<G2Projective> {
        self.msm_g2_many(Points::Slice(bases), &[scalars]).map(one)
    }

    fn msm_g1_fixed(&self, table: &FixedBaseTable, scalars: &[Fr]) -> Result<G1Projective> {
        self.msm_g1_fixed_many(table, &[scalars]).map(one)
    }

    fn msm_g1_many(
        &self,
        bases: Points<'_, G1Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G1Projective>> {
        same_len(bases.len(), sets)?;
        let key = base_key(Group::G1, bases, layout::g1_words);
        self.msm_sets(
            Group::G1,
            key,
            || base_words(bases, layout::g1_words),
            sets,
            layout::g1_from_xyzz,
        )
    }

    fn msm_g2_many(
        &self,
        bases: Points<'_, G2Affine>,
        sets: &[&[Fr]],
    ) -> Result<Vec<G2Projective>> {
        same_len(bases.len(), sets)?;
        let key = base_key(Group::G2, bases, layout::g2_words);
        self.msm_sets(
            Group::G2,
            key,
            || base_words(bases, layout::g2_words),
            sets,
            layout::g2_from_xyzz,
        )
    }

    /// The h query: the table's window-0 points are the plain bases. Shorter scalar vectors
    /// are padded with zeros (free: zero digits touch no bucket).
    fn msm_g1_fixed_many(
        &self,
        table: &FixedBaseTable,
        sets: &[&[Fr]],
    ) -> Result<Vec<G1Projective>> {
        if let Some(s) = sets.iter().find(|s| s.len() > table.bases) {
            return Err(err(format!(
                "{} scalars for {} bases",
                s.len(),
                table.bases
            )));
        }
        let padded: Vec<Vec<Fr>> = sets
            .iter()
            .map(|s| {
                let mut v = s.to_vec();
                v.resize(table.bases, Fr::from(0u64));
                v
            })
            .collect();
        let refs: Vec<&[Fr]> = padded.iter().map(|v| v.as_slice()).collect();
        let key = table_key(table);
        self.msm_sets(
            Group::G1,
            key,
            || layout::g1_words(&table.plain_bases()),
            &refs,
            layout::g1_from_xyzz,
        )
    }

    fn quotient(&self, a: Vec<Fr>, b: Vec<Fr>, c: Vec<Fr>) -> Result<Vec<Fr>> {
        let n = a.len();
        if !n.is_power_of_two() || b.len() != n || c.len() != n || n < 2 {
            return Err(err(format!(
                "no NTT of sizes {n}, {}, {}",
                b.len(),
                c.len()
            )));
        }
        let log_n = n.trailing_zeros();
        let n32 = u32::try_from(n).map_err(|_| err("NTT too large"))?;
        let mut inner = self.lock()?;
        let t = inner.ntt_tables(log_n)?;
        let s = inner.stream.clone();
        let up = drv("uploading NTT input");
        let mut da = s.clone_htod(&layout::fr_words(&a)).map_err(&up)?;
        let mut db = s.clone_htod(&layout::fr_words(&b)).map_err(&up)?;
        let mut dc = s.clone_htod(&layout::fr_words(&c)).map_err(&up)?;
        for v in [&mut da, &mut db, &mut dc] {
            inner.ntt(v, log_n, &t.tw_inv)?;
            inner.scale(v, &t.scale_in, n32)?;
            inner.ntt(v, log_n, &t.tw_fwd)?;
        }
        // SAFETY: quotient_pointwise(u64 *a, const u64 *b, const u64 *c, const u64 *zinv, u32 n).
        unsafe {
            s.launch_builder(inner.f("quotient_pointwise"))
                .arg(&mut da)
                .arg(&db)
                .arg(&dc)
                .arg(&t.z_inv)
                .arg(&n32)
                .launch(cfg(n as u64))
                .map_err(drv("launching quotient_pointwise"))?;
        }
        inner.ntt(&mut da, log_n, &t.tw_inv)?;
        inner.scale(&mut da, &t.scale_out, n32)?;
        let h = s.clone_dtoh(&da).map_err(drv("downloading h"))?;
        debug_assert_eq!(h.len(), n * FR_WORDS);
        Ok(layout::fr_from_words(&h))
    }
}

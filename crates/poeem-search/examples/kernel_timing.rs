use poeem_search::{Kernel, TABLE_STRIDE};
use std::time::Instant;
const BLOCK: usize = 32;

// A: lane outer, subspace inner
#[inline(never)]
fn var_a(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for l in 0..BLOCK {
            let mut acc = bias;
            for mm in 0..m {
                acc += table[mm * 256 + block[mm * BLOCK + l] as usize];
            }
            out[l] = acc;
        }
    }
}
// B: 8 lanes at a time, u64 code loads
#[inline(never)]
fn var_b(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let mut acc = [bias; 8];
            for (mm, t) in table.chunks_exact(256).take(m).enumerate() {
                let t: &[f32; 256] = t.try_into().unwrap();
                let c = u64::from_le_bytes(block[mm * BLOCK + 8 * g..][..8].try_into().unwrap());
                for l in 0..8 {
                    acc[l] += t[((c >> (8 * l)) & 0xff) as usize];
                }
            }
            out[8 * g..8 * g + 8].copy_from_slice(&acc);
        }
    }
}
// C: 16 lanes at a time, u64 code loads
#[inline(never)]
fn var_c(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..2 {
            let mut acc = [bias; 16];
            for (mm, t) in table.chunks_exact(256).take(m).enumerate() {
                let t: &[f32; 256] = t.try_into().unwrap();
                let c = &block[mm * BLOCK + 16 * g..][..16];
                let c0 = u64::from_le_bytes(c[..8].try_into().unwrap());
                let c1 = u64::from_le_bytes(c[8..].try_into().unwrap());
                for l in 0..8 {
                    acc[l] += t[((c0 >> (8 * l)) & 0xff) as usize];
                    acc[l + 8] += t[((c1 >> (8 * l)) & 0xff) as usize];
                }
            }
            out[16 * g..16 * g + 16].copy_from_slice(&acc);
        }
    }
}
// D: 4 lanes at a time, u32 loads
#[inline(never)]
fn var_d(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..8 {
            let mut acc = [bias; 4];
            for (mm, t) in table.chunks_exact(256).take(m).enumerate() {
                let t: &[f32; 256] = t.try_into().unwrap();
                let c = u32::from_le_bytes(block[mm * BLOCK + 4 * g..][..4].try_into().unwrap());
                for l in 0..4 {
                    acc[l] += t[((c >> (8 * l)) & 0xff) as usize];
                }
            }
            out[4 * g..4 * g + 4].copy_from_slice(&acc);
        }
    }
}


#[inline(never)]
fn var_e(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7) = (bias, bias, bias, bias, bias, bias, bias, bias);
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 8] = block[mm * BLOCK + 8 * g..].first_chunk().unwrap();
                a0 += t[c[0] as usize];
                a1 += t[c[1] as usize];
                a2 += t[c[2] as usize];
                a3 += t[c[3] as usize];
                a4 += t[c[4] as usize];
                a5 += t[c[5] as usize];
                a6 += t[c[6] as usize];
                a7 += t[c[7] as usize];
            }
            out[8 * g..8 * g + 8].copy_from_slice(&[a0, a1, a2, a3, a4, a5, a6, a7]);
        }
    }
}
#[inline(never)]
#[target_feature(enable = "avx2")]
fn var_f(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let mut acc = _mm256_set1_ps(bias);
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 8] = block[mm * BLOCK + 8 * g..].first_chunk().unwrap();
                let v = _mm256_setr_ps(t[c[0] as usize], t[c[1] as usize], t[c[2] as usize], t[c[3] as usize], t[c[4] as usize], t[c[5] as usize], t[c[6] as usize], t[c[7] as usize]);
                acc = _mm256_add_ps(acc, v);
            }
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * g), acc) };
        }
    }
}


#[inline(never)]
fn var_g(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    // 16 lanes per pass
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..2 {
            let mut acc = [bias; 16];
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 16] = block[mm * BLOCK + 16 * g..].first_chunk().unwrap();
                for l in 0..16 { acc[l] += t[c[l] as usize]; }
            }
            out[16 * g..16 * g + 16].copy_from_slice(&acc);
        }
    }
}
#[inline(never)]
fn var_h(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    // 8 lanes per pass, array form
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let mut acc = [bias; 8];
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 8] = block[mm * BLOCK + 8 * g..].first_chunk().unwrap();
                for l in 0..8 { acc[l] += t[c[l] as usize]; }
            }
            out[8 * g..8 * g + 8].copy_from_slice(&acc);
        }
    }
}
#[inline(never)]
fn var_i(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    // 4 lanes per pass, array form
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..8 {
            let mut acc = [bias; 4];
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 4] = block[mm * BLOCK + 4 * g..].first_chunk().unwrap();
                for l in 0..4 { acc[l] += t[c[l] as usize]; }
            }
            out[4 * g..4 * g + 4].copy_from_slice(&acc);
        }
    }
}
#[inline(never)]
#[target_feature(enable = "avx2")]
fn var_j(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let mut acc = [bias; 8];
            for mm in 0..m {
                let t: &[f32; 256] = table[mm * 256..].first_chunk().unwrap();
                let c: &[u8; 8] = block[mm * BLOCK + 8 * g..].first_chunk().unwrap();
                for l in 0..8 { acc[l] += t[c[l] as usize]; }
            }
            out[8 * g..8 * g + 8].copy_from_slice(&acc);
        }
    }
}


#[inline(never)]
fn var_k(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let mut acc = [bias; 8];
            for (t, c) in table.chunks_exact(256).zip(block[8 * g..].chunks(BLOCK)).take(m) {
                let t: &[f32; 256] = t.first_chunk().unwrap();
                let w = u64::from_le_bytes(*c.first_chunk::<8>().unwrap());
                for l in 0..8 { acc[l] += t[(w >> (8 * l)) as u8 as usize]; }
            }
            out[8 * g..8 * g + 8].copy_from_slice(&acc);
        }
    }
}
#[inline(never)]
fn var_l(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        for g in 0..4 {
            let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7) = (bias, bias, bias, bias, bias, bias, bias, bias);
            unsafe {
                let mut t = table.as_ptr();
                let mut c = block.as_ptr().add(8 * g);
                for _ in 0..m {
                    let w = (c as *const u64).read_unaligned();
                    a0 += *t.add((w & 0xff) as usize);
                    a1 += *t.add(((w >> 8) & 0xff) as usize);
                    a2 += *t.add(((w >> 16) & 0xff) as usize);
                    a3 += *t.add(((w >> 24) & 0xff) as usize);
                    a4 += *t.add(((w >> 32) & 0xff) as usize);
                    a5 += *t.add(((w >> 40) & 0xff) as usize);
                    a6 += *t.add(((w >> 48) & 0xff) as usize);
                    a7 += *t.add((w >> 56) as usize);
                    t = t.add(256);
                    c = c.add(32);
                }
            }
            out[8 * g..8 * g + 8].copy_from_slice(&[a0, a1, a2, a3, a4, a5, a6, a7]);
        }
    }
}


#[inline(never)]
#[target_feature(enable = "avx2")]
fn var_m(table: &[f32], m: usize, bias: f32, codes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (block, out) in codes.chunks_exact(m * BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
        let mut acc = [_mm_set1_ps(bias); 8];
        for mm in 0..m {
            unsafe {
                let t = table.as_ptr().add(mm * 256);
                let c = block.as_ptr().add(mm * 32);
                let lo = _mm_loadu_si128(c.cast());
                let hi = _mm_loadu_si128(c.add(16).cast());
                let idx = [
                    _mm_cvtepu8_epi32(lo), _mm_cvtepu8_epi32(_mm_srli_si128::<4>(lo)),
                    _mm_cvtepu8_epi32(_mm_srli_si128::<8>(lo)), _mm_cvtepu8_epi32(_mm_srli_si128::<12>(lo)),
                    _mm_cvtepu8_epi32(hi), _mm_cvtepu8_epi32(_mm_srli_si128::<4>(hi)),
                    _mm_cvtepu8_epi32(_mm_srli_si128::<8>(hi)), _mm_cvtepu8_epi32(_mm_srli_si128::<12>(hi)),
                ];
                for i in 0..8 { acc[i] = _mm_add_ps(acc[i], _mm_i32gather_ps::<4>(t, idx[i])); }
            }
        }
        for i in 0..8 { unsafe { _mm_storeu_ps(out.as_mut_ptr().add(4 * i), acc[i]) }; }
    }
}

fn time(name: &str, n: usize, mut f: impl FnMut() -> f32) {
    let mut times = vec![];
    let mut s = 0.0;
    for _ in 0..40 {
        let t = Instant::now();
        s += f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[0];
    println!("{:8} {:7.1} M codes/s (check {})", name, n as f64 / med / 1e6, s);
}

fn main() {
    let m = 16;
    let n_blocks = 1 << 15; // 1M codes
    let mut state = 12345u64;
    let mut rnd = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
    let table: Vec<f32> = (0..m * TABLE_STRIDE).map(|_| (rnd() % 1000) as f32 / 1000.0).collect();
    let codes: Vec<u8> = (0..n_blocks * m * 32).map(|_| rnd() as u8).collect();
    let mut out = vec![0f32; n_blocks * 32];
    let n = n_blocks * 32;
    for k in Kernel::ALL {
        if !k.is_available() { continue; }
        time(k.name(), n, || { k.score_blocks(&table, m, 0.5, &codes, &mut out).unwrap(); out.iter().sum() });
    }
    time("A", n, || { var_a(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("B", n, || { var_b(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("C", n, || { var_c(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("E", n, || { var_e(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("F", n, || { unsafe { var_f(&table, m, 0.5, &codes, &mut out) }; out.iter().sum() });
    time("G", n, || { var_g(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("H", n, || { var_h(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("I", n, || { var_i(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("J", n, || { unsafe { var_j(&table, m, 0.5, &codes, &mut out) }; out.iter().sum() });
    time("K", n, || { var_k(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("L", n, || { var_l(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
    time("M", n, || { unsafe { var_m(&table, m, 0.5, &codes, &mut out) }; out.iter().sum() });
    time("D", n, || { var_d(&table, m, 0.5, &codes, &mut out); out.iter().sum() });
}

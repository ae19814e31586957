// Fused exact nearest-codeword search on the CPU: distance and arg-min in one pass over the
// codebook, the N x K score matrix never exists. Built by tokbench.cuda_ext.cpu_loader with
// the system C++ compiler (no CUDA).
//
// Numerics (the same rules as tokbench.ops.nearest_codeword_torch):
//  * z and the codebook are centred on the codebook mean; the ranking score of codeword k for
//    row i is  s_ik = |c_k|^2 + sum_d (-2 z_id) c_kd  in fp32 (|z|^2 dropped: same arg-min);
//  * |computed - exact score| <= b_i = (2D + 16) 2^-24 (|z_i| + max_k |c_k|)^2, so every codeword
//    whose score is within 2 b_i of the row's best is a near-tie. The kernel keeps each row's
//    running best, its threshold best + 2 b_i, and the (index-ordered) list of codewords that were
//    under the threshold when seen; at the end the ones still under it are re-ranked by |z - c|^2
//    computed directly (in double, from the uncentred fp32 values), ties to the lowest index.
//    A row with too many near-ties (duplicated codewords) is scanned exactly over the whole codebook.
//  * the returned distance is computed directly as well.
//
// Speed: the codebook is packed once into panels of kCodes codewords, dimension-major with the
// squared norms as an extra row, so the micro-kernel reads it linearly; a micro-tile of kRows rows x
// kCodes codewords accumulates in registers (SIMD over codewords), and its only epilogue is a min
// over the tile and one compare against the rows' thresholds: the slow path (the list update) runs
// only when some score comes under a threshold, which after the first panels is rare. Rows are
// split across threads with at::parallel_for (torch.get_num_threads()). The micro-kernel is chosen
// at run time: AVX-512F (a 6 x 64 tile), AVX2 + FMA (3 x 32), or portable loops (simd_level).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
#define TOKBENCH_X86 1
#endif

namespace {

constexpr int kRows = 3;                 // rows of z per micro-tile
constexpr int kVecs = 4;                 // 8-wide vectors of codewords per micro-tile
constexpr int kLanes = 8;
constexpr int kCodes = kVecs * kLanes;   // codewords per panel
constexpr int kBlockRows = 48;         // rows per parallel task (a multiple of kRows)
constexpr int kMaxCandidates = 16;       // near-ties kept per row before it is scanned exactly
constexpr int64_t kTileBytes = 16 << 10;  // codebook panels walked by a row block at once: in L1
                                          // (measured: 16 KiB > 24 > 96 KiB at D = 8)

// Per-row search state, kept for one row block across all codebook tiles.
struct RowState {
  float best = std::numeric_limits<float>::infinity();
  float threshold = std::numeric_limits<float>::infinity();  // best + 2 b
  float slack = 0.f;                                          // 2 b, rounded up
  int count = 0;
  bool overflow = false;
  int64_t cand_index[kMaxCandidates];
  float cand_score[kMaxCandidates];
};

// Slow path: codeword `code` scored `s`, at or under the row's threshold when the panel was scanned.
inline void update_one(RowState& st, float s, int64_t code) {
  if (!(s <= st.threshold)) return;  // an earlier codeword of the panel lowered it
  if (s < st.best) {
    st.best = s;
    st.threshold = std::min(st.threshold, s + st.slack);  // (it may start from a seed)
  }
  if (st.overflow) return;
  if (st.count == kMaxCandidates) {  // drop the candidates the lower threshold has ruled out
    int kept = 0;
    for (int c = 0; c < st.count; ++c)
      if (st.cand_score[c] <= st.threshold) {
        st.cand_index[kept] = st.cand_index[c];
        st.cand_score[kept++] = st.cand_score[c];
      }
    st.count = kept;
    if (kept == kMaxCandidates) {
      st.overflow = true;
      return;
    }
  }
  st.cand_index[st.count] = code;
  st.cand_score[st.count++] = s;
}

// The packed codebook: panel p holds, for d = 0..D-1, the d-th coordinate of codewords
// p*kCodes .. p*kCodes+kCodes-1 (centred), then their squared norms. Padding codewords have
// zero coordinates and an infinite norm, so they never come under a threshold.
struct Packed {
  std::vector<float> data;
  int64_t panels;
  int64_t panel_floats;
};

Packed pack_codebook(const float* cc, int64_t k, int64_t d) {
  Packed p;
  p.panels = (k + kCodes - 1) / kCodes;
  p.panel_floats = (d + 1) * kCodes;
  p.data.assign(static_cast<size_t>(p.panels * p.panel_floats), 0.f);
  at::parallel_for(0, p.panels, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t q = p0; q < p1; ++q) {
      float* panel = p.data.data() + q * p.panel_floats;
      for (int j = 0; j < kCodes; ++j) {
        const int64_t code = q * kCodes + j;
        if (code >= k) {
          panel[d * kCodes + j] = std::numeric_limits<float>::infinity();
          continue;
        }
        float norm = 0.f;
        for (int64_t e = 0; e < d; ++e) {
          const float v = cc[code * d + e];
          panel[e * kCodes + j] = v;
          norm += v * v;
        }
        panel[d * kCodes + j] = norm;
      }
    }
  });
  return p;
}

// Scores of a micro-tile, portable: plain loops the compiler vectorizes for the baseline ISA.
// zm2: kRows rows of -2 z (centred), row stride d. out: kRows x kCodes scores; masks: per row, bit j
// set where score j is <= the row's threshold. Returns whether any bit is set.
inline bool micro_generic(const float* zm2, const float* panel, int64_t d, const float* thresholds,
                          float* out, uint32_t* masks) {
  float acc[kRows][kCodes];
  const float* norms = panel + d * kCodes;
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < kCodes; ++j) acc[r][j] = norms[j];
  for (int64_t e = 0; e < d; ++e) {
    const float* col = panel + e * kCodes;
    for (int r = 0; r < kRows; ++r) {
      const float b = zm2[r * d + e];
      for (int j = 0; j < kCodes; ++j) acc[r][j] += b * col[j];
    }
  }
  bool hit = false;
  for (int r = 0; r < kRows; ++r) {
    uint32_t mask = 0;
    for (int j = 0; j < kCodes; ++j) {
      out[r * kCodes + j] = acc[r][j];
      mask |= static_cast<uint32_t>(acc[r][j] <= thresholds[r]) << j;
    }
    masks[r] = mask;
    hit |= mask != 0;
  }
  return hit;
}

#ifdef TOKBENCH_X86
// The same micro-tile with AVX2 + FMA: 12 accumulators, kRows broadcasts and one codeword vector
// in flight fill the 16 ymm registers; per dimension 4 vector loads + 3 broadcasts feed 12 FMAs.
// (Named accumulators, not an array: GCC keeps an array of __m256 in memory across the loop.)
static_assert(kRows == 3 && kVecs == 4, "micro_avx2 is written out for a 3 x 4 register tile");
// kD > 0: the code dimension, known at compile time (the loop unrolls); 0: d_rt. kSeed: only keep
// running per-row minima in `out` (see seed_avx2). kStore: write out the scores and masks (the slow path recomputes a hit panel this way: identical arithmetic, and the
// fast path then keeps no accumulator live past its min tree, which spared a register spill).
template <int kD, bool kStore, bool kSeed = false>
__attribute__((target("avx2,fma"), always_inline)) inline bool micro_avx2(const float* zm2, const float* panel,
                                                                          int64_t d_rt, const float* thresholds,
                                                                          float* out, uint32_t* masks) {
  const int64_t d = kD > 0 ? kD : d_rt;
  const float* norms = panel + d * kCodes;
  __m256 a00 = _mm256_loadu_ps(norms), a01 = _mm256_loadu_ps(norms + 8), a02 = _mm256_loadu_ps(norms + 16),
         a03 = _mm256_loadu_ps(norms + 24);
  __m256 a10 = a00, a11 = a01, a12 = a02, a13 = a03, a20 = a00, a21 = a01, a22 = a02, a23 = a03;
  const float* z0 = zm2;
  const float* z1 = zm2 + d;
  const float* z2 = zm2 + 2 * d;
  const float* col = panel;
#pragma GCC unroll 8
  for (int64_t e = 0; e < d; ++e, col += kCodes) {
    const __m256 b0 = _mm256_broadcast_ss(z0 + e), b1 = _mm256_broadcast_ss(z1 + e), b2 = _mm256_broadcast_ss(z2 + e);
    __m256 c = _mm256_loadu_ps(col);
    a00 = _mm256_fmadd_ps(b0, c, a00), a10 = _mm256_fmadd_ps(b1, c, a10), a20 = _mm256_fmadd_ps(b2, c, a20);
    c = _mm256_loadu_ps(col + 8);
    a01 = _mm256_fmadd_ps(b0, c, a01), a11 = _mm256_fmadd_ps(b1, c, a11), a21 = _mm256_fmadd_ps(b2, c, a21);
    c = _mm256_loadu_ps(col + 16);
    a02 = _mm256_fmadd_ps(b0, c, a02), a12 = _mm256_fmadd_ps(b1, c, a12), a22 = _mm256_fmadd_ps(b2, c, a22);
    c = _mm256_loadu_ps(col + 24);
    a03 = _mm256_fmadd_ps(b0, c, a03), a13 = _mm256_fmadd_ps(b1, c, a13), a23 = _mm256_fmadd_ps(b2, c, a23);
  }
  const __m256 m0 = _mm256_min_ps(_mm256_min_ps(a00, a01), _mm256_min_ps(a02, a03));
  const __m256 m1 = _mm256_min_ps(_mm256_min_ps(a10, a11), _mm256_min_ps(a12, a13));
  const __m256 m2 = _mm256_min_ps(_mm256_min_ps(a20, a21), _mm256_min_ps(a22, a23));
  const __m256 hit = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(m0, _mm256_broadcast_ss(thresholds), _CMP_LE_OQ),
                                               _mm256_cmp_ps(m1, _mm256_broadcast_ss(thresholds + 1), _CMP_LE_OQ)),
                                  _mm256_cmp_ps(m2, _mm256_broadcast_ss(thresholds + 2), _CMP_LE_OQ));
  if (!kStore) return _mm256_movemask_ps(hit) != 0;
  if (kSeed) {  // out: kRows x 8 running lane minima
    _mm256_storeu_ps(out, _mm256_min_ps(_mm256_loadu_ps(out), m0));
    _mm256_storeu_ps(out + 8, _mm256_min_ps(_mm256_loadu_ps(out + 8), m1));
    _mm256_storeu_ps(out + 16, _mm256_min_ps(_mm256_loadu_ps(out + 16), m2));
    return false;
  }
  // Rare: the scores and, per row, which of them are under its threshold.
  const __m256 t0 = _mm256_broadcast_ss(thresholds), t1 = _mm256_broadcast_ss(thresholds + 1),
               t2 = _mm256_broadcast_ss(thresholds + 2);
#define TB_ROW_MASK(t, x0, x1, x2, x3)                                                   \
  (static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(x0, t, _CMP_LE_OQ))) |        \
   static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(x1, t, _CMP_LE_OQ))) << 8 |   \
   static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(x2, t, _CMP_LE_OQ))) << 16 |  \
   static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(x3, t, _CMP_LE_OQ))) << 24)
  masks[0] = TB_ROW_MASK(t0, a00, a01, a02, a03);
  masks[1] = TB_ROW_MASK(t1, a10, a11, a12, a13);
  masks[2] = TB_ROW_MASK(t2, a20, a21, a22, a23);
#undef TB_ROW_MASK
  _mm256_storeu_ps(out, a00), _mm256_storeu_ps(out + 8, a01), _mm256_storeu_ps(out + 16, a02);
  _mm256_storeu_ps(out + 24, a03), _mm256_storeu_ps(out + 32, a10), _mm256_storeu_ps(out + 40, a11);
  _mm256_storeu_ps(out + 48, a12), _mm256_storeu_ps(out + 56, a13), _mm256_storeu_ps(out + 64, a20);
  _mm256_storeu_ps(out + 72, a21), _mm256_storeu_ps(out + 80, a22), _mm256_storeu_ps(out + 88, a23);
  return (masks[0] | masks[1] | masks[2]) != 0;
}
#endif

// One row group (kRows rows of -2 z at zg) against panels q0 .. q1-1: the fast micro-kernel per
// panel, the list update (update_row) only for panels where some score came under a threshold.
struct GroupScan {
  const float* zg;
  const float* panels;
  int64_t panel_floats, panel_count, d, k;
  float* thresholds;  // kRows entries, kept equal to the rows' state thresholds
  RowState* states;
  int rows;           // valid rows in this group (the rest are padding)
};

// The slow path of one panel: the few scores under a threshold, in index order per row.
void update_group(const GroupScan& g, const float* scores, const uint32_t* masks, int64_t q) {
  const int64_t base = q * kCodes;
  for (int r = 0; r < g.rows; ++r) {
    RowState& st = g.states[r];
    for (uint32_t m = masks[r]; m; m &= m - 1) {
      const int j = __builtin_ctz(m);
      if (base + j >= g.k) break;  // padding codewords
      update_one(st, scores[r * kCodes + j], base + j);
    }
    g.thresholds[r] = st.threshold;
  }
}

void scan_generic(const GroupScan& g, int64_t q0, int64_t q1) {
  alignas(32) float scores[kRows * kCodes];
  uint32_t masks[kRows];
  for (int64_t q = q0; q < q1; ++q)
    if (micro_generic(g.zg, g.panels + q * g.panel_floats, g.d, g.thresholds, scores, masks))
      update_group(g, scores, masks, q);
}

#ifdef TOKBENCH_X86
template <int kD>
__attribute__((target("avx2,fma"), noinline)) void on_hit_avx2(const GroupScan& g, int64_t q) {
  alignas(32) float scores[kRows * kCodes];
  uint32_t masks[kRows];
  micro_avx2<kD, true>(g.zg, g.panels + q * g.panel_floats, g.d, g.thresholds, scores, masks);
  update_group(g, scores, masks, q);
}

template <int kD>
__attribute__((target("avx2,fma"))) void scan_avx2(const GroupScan& g, int64_t q0, int64_t q1) {
  if (q0 == 0 && g.states[0].best == std::numeric_limits<float>::infinity()) {
    // Seed: the minimum over the first panels, found branch-free, starts each row's threshold low
    // (any score + 2 b bounds the final one from above). A running minimum over the codebook
    // in a fixed order sets ~ln(panels) records per row, each a mispredicted branch into the slow
    // path; from a seed of S panels only ~ln(panels / S) remain. (The seed's panels are scanned
    // again below, so its best codeword still becomes a candidate.)
    const int64_t seed_panels = std::min<int64_t>(q1, std::max<int64_t>(2, g.panel_count / 16));
    alignas(32) float run[kRows * kLanes];
    std::fill(run, run + kRows * kLanes, std::numeric_limits<float>::infinity());
    for (int64_t q = 0; q < seed_panels; ++q)
      micro_avx2<kD, true, true>(g.zg, g.panels + q * g.panel_floats, g.d, g.thresholds, run, nullptr);
    for (int r = 0; r < g.rows; ++r) {
      const float m = *std::min_element(run + r * kLanes, run + (r + 1) * kLanes);
      g.states[r].threshold = std::min(g.states[r].threshold, m + g.states[r].slack);
      g.thresholds[r] = g.states[r].threshold;
    }
  }
  for (int64_t q = q0; q < q1; ++q)
    if (__builtin_expect(micro_avx2<kD, false>(g.zg, g.panels + q * g.panel_floats, g.d, g.thresholds, nullptr,
                                               nullptr), 0))
      on_hit_avx2<kD>(g, q);
}
#endif


#ifdef TOKBENCH_X86
// The micro-tile with AVX-512F: kRows512 rows x kPanels512 consecutive 32-codeword panels (two zmm
// vectors each) in 24 accumulators, + 4 codeword vectors + a broadcast = 29 of the 32 zmm registers;
// per dimension 4 vector loads and 6 broadcasts feed 24 FMAs (the AVX2 tile: 7 loads per 12), and
// the epilogue's threshold test runs on mask registers. The arithmetic per score is the AVX2
// kernel's exactly (norm, then one FMA per dimension in index order).
constexpr int kRows512 = 6;
constexpr int kPanels512 = 2;
static_assert(kBlockRows % kRows512 == 0, "row blocks must hold whole AVX-512 groups");

// kP: panels in this tile (kPanels512, or 1 for an odd last panel); pstride: floats per panel.
// out (kStore): per panel, kRows512 x kCodes scores; masks: per panel, kRows512 row masks.
template <int kD, int kP, bool kStore, bool kSeed = false>
__attribute__((target("avx512f"), always_inline)) inline bool micro_avx512(const float* zm2, const float* panel,
                                                                           int64_t pstride, int64_t d_rt,
                                                                           const float* thresholds, float* out,
                                                                           uint32_t* masks) {
  constexpr int kV = 2 * kP;  // zmm vectors per row
  const int64_t d = kD > 0 ? kD : d_rt;
  __m512 acc[kRows512][kV];  // fully unrolled below: GCC keeps them in registers
#pragma GCC unroll 4
  for (int v = 0; v < kV; ++v) {
    const __m512 norm = _mm512_loadu_ps(panel + (v / 2) * pstride + d * kCodes + (v % 2) * 16);
#pragma GCC unroll 12
    for (int r = 0; r < kRows512; ++r) acc[r][v] = norm;
  }
#pragma GCC unroll 8
  for (int64_t e = 0; e < d; ++e) {
    __m512 col[kV];
#pragma GCC unroll 4
    for (int v = 0; v < kV; ++v) col[v] = _mm512_loadu_ps(panel + (v / 2) * pstride + e * kCodes + (v % 2) * 16);
#pragma GCC unroll 12
    for (int r = 0; r < kRows512; ++r) {
      const __m512 b = _mm512_set1_ps(zm2[r * d + e]);
#pragma GCC unroll 4
      for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_fmadd_ps(b, col[v], acc[r][v]);
    }
  }
  __m512 row_min[kRows512];
  if (!kStore || kSeed) {
#pragma GCC unroll 12
    for (int r = 0; r < kRows512; ++r) {
      row_min[r] = acc[r][0];
#pragma GCC unroll 4
      for (int v = 1; v < kV; ++v) row_min[r] = _mm512_min_ps(row_min[r], acc[r][v]);
    }
  }
  if (kSeed) {  // out: kRows512 x 16 running lane minima
#pragma GCC unroll 12
    for (int r = 0; r < kRows512; ++r)
      _mm512_storeu_ps(out + r * 16, _mm512_min_ps(_mm512_loadu_ps(out + r * 16), row_min[r]));
    return false;
  }
  if (!kStore) {  // (the masks are OR-ed in mask registers: `|=` on __mmask16 went through general registers)
    __mmask16 hit = _mm512_cmp_ps_mask(row_min[0], _mm512_set1_ps(thresholds[0]), _CMP_LE_OQ);
#pragma GCC unroll 12
    for (int r = 1; r < kRows512; ++r)
      hit = _mm512_kor(hit, _mm512_cmp_ps_mask(row_min[r], _mm512_set1_ps(thresholds[r]), _CMP_LE_OQ));
    return !_mm512_kortestz(hit, hit);
  }
  // Rare: the scores and, per row, which of them are under its threshold.
  uint32_t any = 0;
#pragma GCC unroll 12
  for (int r = 0; r < kRows512; ++r) {
    const __m512 t = _mm512_set1_ps(thresholds[r]);
#pragma GCC unroll 2
    for (int p = 0; p < kP; ++p) {
      uint32_t& mask = masks[p * kRows512 + r];
      mask = static_cast<uint32_t>(_mm512_cmp_ps_mask(acc[r][2 * p], t, _CMP_LE_OQ)) |
             static_cast<uint32_t>(_mm512_cmp_ps_mask(acc[r][2 * p + 1], t, _CMP_LE_OQ)) << 16;
      any |= mask;
      _mm512_storeu_ps(out + (p * kRows512 + r) * kCodes, acc[r][2 * p]);
      _mm512_storeu_ps(out + (p * kRows512 + r) * kCodes + 16, acc[r][2 * p + 1]);
    }
  }
  return any != 0;
}

template <int kD, int kP>
__attribute__((target("avx512f"), noinline)) void on_hit_avx512(const GroupScan& g, int64_t q) {
  alignas(64) float scores[kP * kRows512 * kCodes];
  uint32_t masks[kP * kRows512];
  micro_avx512<kD, kP, true>(g.zg, g.panels + q * g.panel_floats, g.panel_floats, g.d, g.thresholds, scores, masks);
  for (int p = 0; p < kP; ++p)  // panel by panel: each row's candidates stay in index order
    update_group(g, scores + p * kRows512 * kCodes, masks + p * kRows512, q + p);
}

template <int kD>
__attribute__((target("avx512f"))) void scan_avx512(const GroupScan& g, int64_t q0, int64_t q1) {
  const float* zg = g.zg;
  if (q0 == 0 && g.states[0].best == std::numeric_limits<float>::infinity()) {
    // The branch-free seed pass of scan_avx2 (see there), 16 lanes per row.
    const int64_t seed_panels = std::min<int64_t>(q1, std::max<int64_t>(2, g.panel_count / 16));
    alignas(64) float run[kRows512 * 16];
    std::fill(run, run + kRows512 * 16, std::numeric_limits<float>::infinity());
    int64_t q = 0;
    for (; q + kPanels512 <= seed_panels; q += kPanels512)
      micro_avx512<kD, kPanels512, true, true>(zg, g.panels + q * g.panel_floats, g.panel_floats, g.d, g.thresholds,
                                               run, nullptr);
    for (; q < seed_panels; ++q)
      micro_avx512<kD, 1, true, true>(zg, g.panels + q * g.panel_floats, g.panel_floats, g.d, g.thresholds, run,
                                      nullptr);
    for (int r = 0; r < g.rows; ++r) {
      const float m = *std::min_element(run + r * 16, run + (r + 1) * 16);
      g.states[r].threshold = std::min(g.states[r].threshold, m + g.states[r].slack);
      g.thresholds[r] = g.states[r].threshold;
    }
  }
  int64_t q = q0;
  for (; q + kPanels512 <= q1; q += kPanels512)
    if (__builtin_expect(micro_avx512<kD, kPanels512, false>(zg, g.panels + q * g.panel_floats, g.panel_floats, g.d,
                                                             g.thresholds, nullptr, nullptr), 0))
      on_hit_avx512<kD, kPanels512>(g, q);
  for (; q < q1; ++q)
    if (micro_avx512<kD, 1, false>(zg, g.panels + q * g.panel_floats, g.panel_floats, g.d, g.thresholds, nullptr,
                                   nullptr))
      on_hit_avx512<kD, 1>(g, q);
}
#endif

using ScanFn = void (*)(const GroupScan&, int64_t, int64_t);

// The micro-kernels a run can use, best first; which one runs is chosen per call (see simd_levels).
enum class Simd { kGeneric, kAvx2, kAvx512 };

struct Scan {
  ScanFn fn;
  int group_rows;  // rows per micro-tile
};

template <template <int> class Kernel>
ScanFn by_dim(int64_t d) {  // the common small D get a kernel unrolled for them
  switch (d) {
    case 4: return Kernel<4>::fn;
    case 8: return Kernel<8>::fn;
    case 16: return Kernel<16>::fn;
    case 32: return Kernel<32>::fn;
    default: return Kernel<0>::fn;
  }
}

#ifdef TOKBENCH_X86
template <int kD> struct Avx2 { static constexpr ScanFn fn = scan_avx2<kD>; };
template <int kD> struct Avx512 { static constexpr ScanFn fn = scan_avx512<kD>; };
#endif

Scan pick_scan(Simd simd, int64_t d) {
#ifdef TOKBENCH_X86
  if (simd == Simd::kAvx512) return {by_dim<Avx512>(d), kRows512};
  if (simd == Simd::kAvx2) return {by_dim<Avx2>(d), kRows};
#endif
  return {scan_generic, kRows};
}

// |z - c|^2 from the uncentred fp32 values, accumulated in double.
inline double direct_sq_dist(const float* z, const float* c, int64_t d) {
  double s = 0.0;
  for (int64_t e = 0; e < d; ++e) {
    const double t = static_cast<double>(z[e]) - static_cast<double>(c[e]);
    s += t * t;
  }
  return s;
}

// Final answer of one row from its state: the exact minimum over its surviving near-ties.
inline void finish_row(const RowState& st, const float* z, const float* code, int64_t k, int64_t d,
                       int64_t* out_index, float* out_distance) {
  int64_t best_k = -1;
  double best_d = std::numeric_limits<double>::infinity();
  if (st.overflow) {  // many near-ties (duplicates): the exact minimum over the whole codebook
    for (int64_t j = 0; j < k; ++j) {
      const double dist = direct_sq_dist(z, code + j * d, d);
      if (dist < best_d) best_d = dist, best_k = j;
    }
  } else {
    for (int c = 0; c < st.count; ++c) {  // candidates are in increasing index order
      if (!(st.cand_score[c] <= st.threshold)) continue;
      const int64_t j = st.cand_index[c];
      const double dist = direct_sq_dist(z, code + j * d, d);
      if (best_k < 0 || dist < best_d) best_d = dist, best_k = j;
    }
  }
  if (best_k < 0) {  // unreachable for finite inputs; be safe with overflowing scores
    for (int64_t j = 0; j < k; ++j) {
      const double dist = direct_sq_dist(z, code + j * d, d);
      if (best_k < 0 || dist < best_d) best_d = dist, best_k = j;
    }
  }
  *out_index = best_k;
  *out_distance = static_cast<float>(best_d);
}

bool cpu_has_avx2() {
#ifdef TOKBENCH_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512() {  // (libgcc also checks that the OS saves the zmm registers)
#ifdef TOKBENCH_X86
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

// AMD family 19h (Zen 3, Zen 4): Zen 4 runs a 512-bit FMA as two 256-bit halves, so the AVX-512
// tile has no more FMA throughput than the AVX2 one, and it measured 3-9% slower (BENCHMARKS.md).
bool avx512_is_half_rate() {
#ifdef TOKBENCH_X86
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx) || ebx != 0x68747541u) return false;  // "Auth"enticAMD
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned base = (eax >> 8) & 0xF;
  const unsigned family = base == 0xF ? base + ((eax >> 20) & 0xFF) : base;
  return family == 0x19;
#else
  return false;
#endif
}

}  // namespace

// The micro-kernels this CPU can run, widest first: some of "avx512", "avx2" (with FMA), and "generic".
std::vector<std::string> simd_levels() {
  std::vector<std::string> out;
  if (cpu_has_avx512()) out.emplace_back("avx512");
  if (cpu_has_avx2()) out.emplace_back("avx2");
  out.emplace_back("generic");
  return out;
}

// The one "auto" runs: the widest, except AVX2 where AVX-512 runs at half rate (see avx512_is_half_rate).
std::string simd_level() {
  if (cpu_has_avx512() && cpu_has_avx2() && avx512_is_half_rate()) return "avx2";
  return simd_levels().front();
}

namespace {

Simd parse_simd(const std::string& level) {
  const std::vector<std::string> have = simd_levels();
  const std::string want = level == "auto" ? simd_level() : level;
  TORCH_CHECK(want == "avx512" || want == "avx2" || want == "generic",
              "nearest_codeword_cpu: simd must be 'auto', 'avx512', 'avx2' or 'generic', got '", level, "'");
  TORCH_CHECK(std::find(have.begin(), have.end(), want) != have.end(), "nearest_codeword_cpu: this CPU cannot run the ",
              want, " kernel (it has: ", simd_level(), ")");
  return want == "avx512" ? Simd::kAvx512 : want == "avx2" ? Simd::kAvx2 : Simd::kGeneric;
}

}  // namespace

// z (N, D), codebook (K, D): float32 CPU tensors. simd: "auto" (the fastest micro-kernel this CPU
// runs) or one of simd_levels() (tests and benchmarks force each). Every level is exact (the rounding
// bound covers each one's arithmetic), so all return the same indices and distances.
// Returns (index int64 (N,), distance float32 (N,)).
std::vector<at::Tensor> nearest_codeword_cpu(at::Tensor z, at::Tensor codebook, const std::string& simd) {
  TORCH_CHECK(z.device().is_cpu() && codebook.device().is_cpu(), "nearest_codeword_cpu: tensors must be on the CPU");
  TORCH_CHECK(z.dim() == 2 && codebook.dim() == 2 && z.size(1) == codebook.size(1),
              "nearest_codeword_cpu: expected z (N, D) and codebook (K, D)");
  TORCH_CHECK(z.scalar_type() == at::kFloat && codebook.scalar_type() == at::kFloat,
              "nearest_codeword_cpu: z and codebook must be float32");
  TORCH_CHECK(codebook.size(0) > 0, "nearest_codeword_cpu: empty codebook");
  z = z.contiguous();
  codebook = codebook.contiguous();
  const int64_t n = z.size(0), k = codebook.size(0), d = z.size(1);
  at::Tensor index = at::empty({n}, z.options().dtype(at::kLong));
  at::Tensor distance = at::empty({n}, z.options());
  if (n == 0) return {index, distance};

  // Centring changes no distance but keeps the expansion well conditioned.
  const at::Tensor mean = codebook.mean(0, /*keepdim=*/true);
  const at::Tensor cc = (codebook - mean).contiguous();
  const at::Tensor zm2 = (z - mean).mul_(-2.f).contiguous();  // exact: a power of two
  const double c_max = cc.square().sum(1).max().item<float>();
  const double tol = (2.0 * d + 16.0) * std::ldexp(1.0, -24);
  const Packed packed = pack_codebook(cc.data_ptr<float>(), k, d);
  const float* zm2_p = zm2.data_ptr<float>();
  const float* z_p = z.data_ptr<float>();
  const float* code_p = codebook.data_ptr<float>();
  int64_t* index_p = index.data_ptr<int64_t>();
  float* distance_p = distance.data_ptr<float>();
  const Scan scan = pick_scan(parse_simd(simd), d);
  const int64_t tile_panels = std::max<int64_t>(1, kTileBytes / (packed.panel_floats * 4));
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;

  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<RowState> state(kBlockRows);
    std::vector<float> zpad(static_cast<size_t>(kBlockRows * d));
    float thresholds[kBlockRows];
    for (int64_t block = b0; block < b1; ++block) {
      const int64_t r0 = block * kBlockRows;
      const int rows = static_cast<int>(std::min<int64_t>(kBlockRows, n - r0));
      const int groups = (rows + scan.group_rows - 1) / scan.group_rows;
      // This block's -2 z, padded with zero rows to a whole number of micro-tiles.
      std::fill(zpad.begin(), zpad.end(), 0.f);
      std::copy(zm2_p + r0 * d, zm2_p + (r0 + rows) * d, zpad.begin());
      for (int r = 0; r < kBlockRows; ++r) {
        state[r] = RowState();
        if (r < rows) {
          double zn = 0.0;  // |z - m| = |zm2| / 2
          for (int64_t e = 0; e < d; ++e) zn += 0.25 * double(zpad[r * d + e]) * double(zpad[r * d + e]);
          const double bound = tol * std::pow(std::sqrt(zn) + std::sqrt(c_max), 2);
          state[r].slack = static_cast<float>(2.0 * bound * (1.0 + 1e-6));
        }
        // Padding rows never come under a threshold.
        thresholds[r] = r < rows ? state[r].threshold : -std::numeric_limits<float>::infinity();
      }
      for (int64_t t0 = 0; t0 < packed.panels; t0 += tile_panels) {
        const int64_t t1 = std::min(packed.panels, t0 + tile_panels);
        for (int g = 0; g < groups; ++g) {
          const int g0 = g * scan.group_rows;
          const GroupScan group{zpad.data() + g0 * d, packed.data.data(), packed.panel_floats, packed.panels, d, k,
                                thresholds + g0, state.data() + g0, std::min(scan.group_rows, rows - g0)};
          scan.fn(group, t0, t1);
        }
      }
      for (int r = 0; r < rows; ++r)
        finish_row(state[r], z_p + (r0 + r) * d, code_p, k, d, index_p + r0 + r, distance_p + r0 + r);
    }
  });
  return {index, distance};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nearest_codeword_cpu", &nearest_codeword_cpu,
        "fused exact nearest-codeword search on the CPU (indices int64, distances fp32)", pybind11::arg("z"),
        pybind11::arg("codebook"), pybind11::arg("simd") = "auto");
  m.def("simd_levels", &simd_levels, "the micro-kernels this CPU can run, widest first ('avx512', 'avx2', 'generic')");
  m.def("simd_level", &simd_level, "the micro-kernel 'auto' runs on this CPU");
}

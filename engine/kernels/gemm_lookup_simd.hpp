#pragma once
// Grouped lookup shared by gemm_binary (groups of 4) and gemm_ternary (groups of 3); their entry points
// are gemm_binary_simd.hpp and gemm_ternary_simd.hpp.
#include "kernels/simd_common.hpp"

namespace fewmul::kernels::detail {
namespace {  // one copy per translation unit (see xsimd_compat.hpp)

template <class A>
struct gemm_lookup_simd : simd_common<A> {
  using base = simd_common<A>;
  using base::lane_mask;
  using base::lanes;
  using base::load_panel_tile;
  using base::store_panel_tile;
  using typename base::fb;
  using typename base::ib;
  using typename base::ub;

  // Binary and ternary by grouped lookup (see "Summation order" in fewmul/kernels.hpp). A group covers
  // `Group` consecutive k of B's bit planes, starting at a multiple of Group (K blocks start at multiples
  // of 12). B becomes per column the index of its group's weights, in panels [cols/nr][groups][nr] of
  // int32; each row of A becomes per group a table of all signed sums, which one permute reads for a
  // whole vector of columns.
  //   binary, group 4, 16 entries: index bit u = weight bit of k = 4g + u; T[p] = (s0 + s1) + (s2 + s3),
  //     s_u = (bit u of p) ? a_u : -a_u.
  //   ternary, group 3, 32 entries (27 used): index = d0 + 3 d1 + 9 d2 with d_u = 0, 1, 2 for a weight
  //     0, +1, -1 at k = 3g + u; T[p] = (v0 + v1) + v2, v_u = 0, a_u, -a_u by the digit d_u of p.
  // Bits past K read as 0 and a_u past K as 0.
  // Register tile of the lookups: on AVX-512 6 rows x 4 vectors (64 columns: one word of bits), so each
  // table loaded from L1 serves four permutes; elsewhere 4 rows x 2 vectors.
  static constexpr std::size_t lookup_mr = lanes == 16 ? 6 : 4;
  static constexpr std::size_t lookup_nv = lanes == 16 ? 4 : 2;
  static constexpr std::size_t lookup_nr = lookup_nv * lanes;
  static_assert(64 % lookup_nr == 0, "a lookup panel's bits must lie inside one 64-bit word");
  // Outputs at most two vectors wide (convolutions with few channels) would leave half of the 6 x 4 tile
  // padding: there the tile is 12 rows x 2 vectors instead (AVX-512; elsewhere the one shape).
  static constexpr std::size_t narrow_mr = lanes == 16 ? 12 : lookup_mr;
  static constexpr std::size_t narrow_nv = lanes == 16 ? 2 : lookup_nv;

  struct lookup_operands {
    std::size_t m, n, k;
    const float* a;
    std::size_t a_rs, a_cs;
    const std::uint64_t* sign;     // binary: the weight bits
    const std::uint64_t* nonzero;  // ternary only
    std::size_t ldb;
    float* c;
    std::size_t ldc;
    cache_sizes caches;
    void* workspace;
  };
  template <std::size_t Group>
  static constexpr std::size_t table_entries = Group == 4 ? 16 : 32;

  static std::uint64_t tile_bits(const std::uint64_t* row, std::size_t j0) { return row[j0 / 64] >> (j0 % 64); }
  template <std::size_t Group>
  static ub group_index(const lookup_operands& p, std::size_t q0, std::size_t j0) {
    ub idx(0u);
    for (std::size_t u = 0; u < Group; ++u) {
      const std::size_t q = q0 + u;
      if (q >= p.k) break;
      if constexpr (Group == 4) {
        // Bit u where the column's weight bit is set: one mask move and one masked move on AVX-512.
        const auto set = simd_compat::mask_from_bits<A>(static_cast<std::uint32_t>(tile_bits(p.sign + q * p.ldb, j0)));
        idx = idx + simd_compat::as_bits<A>(xsimd::select(set, simd_compat::as_float<A>(ub(1u << u)), fb(0.0f)));
      } else {
        // Digit 1 (+1) or 2 (-1) times 3^u: the weight where the bit is nonzero, once more where it is negative.
        const auto nz = static_cast<std::uint32_t>(tile_bits(p.nonzero + q * p.ldb, j0));
        const auto negative = nz & ~static_cast<std::uint32_t>(tile_bits(p.sign + q * p.ldb, j0));
        const fb weight = simd_compat::as_float<A>(ub(u == 0 ? 1u : u == 1 ? 3u : 9u));
        idx = idx + simd_compat::as_bits<A>(xsimd::select(simd_compat::mask_from_bits<A>(nz), weight, fb(0.0f))) +
              simd_compat::as_bits<A>(xsimd::select(simd_compat::mask_from_bits<A>(negative), weight, fb(0.0f)));
      }
    }
    return idx;
  }
  template <std::size_t Group, std::size_t NV>
  static void pack_indices(const lookup_operands& p, std::size_t pc, std::size_t kb, std::size_t jc, std::size_t nb,
                           std::int32_t* out) {
    const std::size_t groups = (kb + Group - 1) / Group;
    for (std::size_t j0 = 0; j0 < nb; j0 += NV * lanes) {
      std::int32_t* panel = out + j0 * groups;
      for (std::size_t g = 0; g < groups; ++g)
        for (std::size_t v = 0; v < NV; ++v)
          xsimd::bitwise_cast<ib>(group_index<Group>(p, pc + Group * g, jc + j0 + v * lanes))
              .store_aligned(panel + g * NV * lanes + v * lanes);
    }
  }
  // Lane masks of the table entries: negate[u][p] has the sign bit where bit u of p is 0 (binary: -a_u);
  // ternary_negate[u][p] where digit u of p is 2, ternary_keep[u][p] is all ones where it is not 0.
  struct table_masks {
    alignas(64) std::uint32_t negate[4][16];
    alignas(64) std::uint32_t ternary_negate[3][32];
    alignas(64) std::uint32_t ternary_keep[3][32];
  };
  // The masks' rules, shared by the lane-by-lane tables and the permuted ones: a binary weight bit clear
  // negates, a ternary digit 2 negates and a digit 0 drops the value.
  static constexpr std::uint32_t negate_unless(bool bit) { return bit ? 0u : 0x80000000u; }
  static constexpr std::uint32_t digit_negate(std::size_t digit) { return digit == 2 ? 0x80000000u : 0u; }
  static constexpr std::uint32_t digit_keep(std::size_t digit) { return digit != 0 ? 0xffffffffu : 0u; }
  static constexpr table_masks make_table_masks() {
    table_masks t{};
    for (std::size_t p = 0; p < 16; ++p)
      for (std::size_t u = 0; u < 4; ++u) t.negate[u][p] = negate_unless((p >> u) & 1u);
    for (std::size_t p = 0; p < 32; ++p)
      for (std::size_t u = 0, d = p; u < 3; ++u, d /= 3) {
        const std::size_t digit = p < 27 ? d % 3 : 0;
        t.ternary_negate[u][p] = digit_negate(digit);
        t.ternary_keep[u][p] = digit_keep(digit);
      }
    return t;
  }
  // One table the lane-by-lane way, from the group's Group values a_u (layout and sums: the top of this file).
  template <std::size_t Group>
  static void lane_table(const float* a_u, float* table) {
    alignas(64) static constexpr table_masks masks = make_table_masks();
    for (std::size_t q = 0; q < table_entries<Group>; q += lanes) {
      if constexpr (Group == 4) {
        fb s[4];
        for (std::size_t u = 0; u < 4; ++u)
          s[u] = simd_compat::as_float<A>(simd_compat::as_bits<A>(fb(a_u[u])) ^ ub::load_aligned(masks.negate[u] + q));
        ((s[0] + s[1]) + (s[2] + s[3])).store_aligned(table + q);
      } else {
        fb v[3];
        for (std::size_t u = 0; u < 3; ++u)
          v[u] = simd_compat::as_float<A>(
              (simd_compat::as_bits<A>(fb(a_u[u])) ^ ub::load_aligned(masks.ternary_negate[u] + q)) &
              ub::load_aligned(masks.ternary_keep[u] + q));
        ((v[0] + v[1]) + v[2]).store_aligned(table + q);
      }
    }
  }
  // Binary tables of `groups` groups of four consecutive floats at `a` (floats from `count` on read as 0), table g
  // at out + g * stride. On AVX-512 and AVX2 lanes / 4 groups at a time from one load: the pair sums s0 + s1 and
  // s2 + s3 for the four sign choices of each pair are formed for all those groups at once (lanes [group][choice]),
  // and each table vector is then two permutes of them and one add, T[p] = pair01[p & 3] + pair23[p >> 2]: the
  // same two sums and the same final add as the lane-by-lane form, about half its instructions.
  static void build_binary_tables(const float* a, std::size_t count, std::size_t groups, float* out,
                                  std::size_t stride) {
    std::size_t g = 0;
    if constexpr (simd_compat::is_avx512<A> || simd_compat::is_avx<A>) {
      constexpr std::size_t per_load = lanes / 4;  // groups
      struct constants {
        alignas(64) std::int32_t spread[4][16], expand_low[4][16], expand_high[4][16];
        alignas(64) std::uint32_t negate_first[16], negate_second[16];
      };
      alignas(64) static constexpr constants k = [] {
        constants c{};
        for (std::size_t l = 0; l < 16; ++l) {
          for (std::size_t u = 0; u < 4; ++u) {
            c.spread[u][l] = static_cast<std::int32_t>((l & 12) + u);           // lane [group][choice] <- a_u
            c.expand_low[u][l] = static_cast<std::int32_t>(4 * u + (l & 3));    // entry l of group u's table:
            c.expand_high[u][l] = static_cast<std::int32_t>(4 * u + (l >> 2));  // pair01 and pair23 lanes
          }
          c.negate_first[l] = negate_unless(l & 1);  // choice c: bit 0 the first sign, bit 1 the second
          c.negate_second[l] = negate_unless(l & 2);
        }
        return c;
      }();
      const ub first = ub::load_aligned(k.negate_first), second = ub::load_aligned(k.negate_second);
      auto spread = [&](fb v, std::size_t u) {
        return simd_compat::permute_lanes<A>(v, ib::load_aligned(k.spread[u]));
      };
      auto sign = [](fb v, ub negate) { return simd_compat::as_float<A>(simd_compat::as_bits<A>(v) ^ negate); };
      for (; g < groups; g += per_load) {
        fb v;
        if (4 * g + lanes <= count) {
          v = fb::load_unaligned(a + 4 * g);
        } else {
          alignas(64) float part[lanes] = {};
          for (std::size_t q = 4 * g; q < count && q < 4 * g + lanes; ++q) part[q - 4 * g] = a[q];
          v = fb::load_aligned(part);
        }
        const fb pair01 = sign(spread(v, 0), first) + sign(spread(v, 1), second);
        const fb pair23 = sign(spread(v, 2), first) + sign(spread(v, 3), second);
        for (std::size_t u = 0; u < per_load && g + u < groups; ++u)
          for (std::size_t q = 0; q < 16; q += lanes)
            (simd_compat::permute_lanes<A>(pair01, ib::load_aligned(k.expand_low[u] + q)) +
             simd_compat::permute_lanes<A>(pair23, ib::load_aligned(k.expand_high[u] + q)))
                .store_aligned(out + (g + u) * stride + q);
      }
    }
    for (; g < groups; ++g) {
      float a_u[4] = {};
      for (std::size_t u = 0; u < 4 && 4 * g + u < count; ++u) a_u[u] = a[4 * g + u];
      lane_table<4>(a_u, out + g * stride);
    }
  }
  // Ternary tables (AVX-512) of `groups` groups of three consecutive floats at `a` (floats from `count` on read as
  // 0), table g at out + g * stride: the pair sums v0 + v1 of the nine digit pairs first (lanes d0 + 3 d1), then
  // each half of the table as one permute of them plus v2, T[p] = pair[p % 9] + v2 (entries 27..31: lane 0 of
  // the pairs, +0, plus +0) - the lane-by-lane form's operands and order, with a third fewer instructions.
  static void build_ternary_tables(const float* a, std::size_t count, std::size_t groups, float* out,
                                   std::size_t stride) {
    static_assert(simd_compat::is_avx512<A>, "one 16-lane register per half table");
    struct constants {
      alignas(64) std::uint32_t negate[2][16], keep[2][16];    // v0, v1 in the pair lanes
      alignas(64) std::uint32_t negate2[2][16], keep2[2][16];  // v2 in each half
      alignas(64) std::int32_t pair_of[2][16];                 // each half's entries' pair lane
    };
    alignas(64) static constexpr constants k = [] {
      constants c{};
      for (std::size_t l = 0; l < 16; ++l) {
        const std::size_t d0 = l < 9 ? l % 3 : 0, d1 = l < 9 ? l / 3 : 0;
        c.negate[0][l] = digit_negate(d0), c.keep[0][l] = digit_keep(d0);
        c.negate[1][l] = digit_negate(d1), c.keep[1][l] = digit_keep(d1);
        for (std::size_t h = 0; h < 2; ++h) {
          const std::size_t e = 16 * h + l, d2 = e < 27 ? e / 9 : 0;
          c.negate2[h][l] = digit_negate(d2), c.keep2[h][l] = digit_keep(d2);
          c.pair_of[h][l] = static_cast<std::int32_t>(e < 27 ? e % 9 : 0);
        }
      }
      return c;
    }();
    auto digit_value = [](float v, const std::uint32_t* negate, const std::uint32_t* keep) {
      return simd_compat::as_float<A>((simd_compat::as_bits<A>(fb(v)) ^ ub::load_aligned(negate)) &
                                      ub::load_aligned(keep));
    };
    for (std::size_t g = 0; g < groups; ++g) {
      float a_u[3] = {};
      for (std::size_t u = 0; u < 3 && 3 * g + u < count; ++u) a_u[u] = a[3 * g + u];
      const fb pairs = digit_value(a_u[0], k.negate[0], k.keep[0]) + digit_value(a_u[1], k.negate[1], k.keep[1]);
      for (std::size_t h = 0; h < 2; ++h)
        (simd_compat::permute_lanes<A>(pairs, ib::load_aligned(k.pair_of[h])) +
         digit_value(a_u[2], k.negate2[h], k.keep2[h]))
            .store_aligned(out + g * stride + 16 * h);
    }
  }
  template <std::size_t Group, std::size_t MR>
  static void build_tables(const lookup_operands& p, std::size_t i0, std::size_t h, std::size_t pc, std::size_t kb,
                           float* out) {
    constexpr std::size_t entries = table_entries<Group>;
    const std::size_t groups = (kb + Group - 1) / Group;
    if constexpr (Group == 4 || simd_compat::is_avx512<A>) {
      if (p.a_cs == 1) {  // rows of A contiguous along k: row by row
        for (std::size_t r = 0; r < MR; ++r) {
          const float* row = p.a + (i0 + std::min(r, h - 1)) * p.a_rs + pc;
          if constexpr (Group == 4)
            build_binary_tables(row, r < h ? kb : 0, groups, out + r * entries, MR * entries);
          else
            build_ternary_tables(row, r < h ? kb : 0, groups, out + r * entries, MR * entries);
        }
        return;
      }
    }
    for (std::size_t g = 0; g < groups; ++g)
      for (std::size_t r = 0; r < MR; ++r) {
        float a_u[Group] = {};
        if (r < h)
          for (std::size_t u = 0; u < Group && Group * g + u < kb; ++u)
            a_u[u] = p.a[(i0 + r) * p.a_rs + (pc + Group * g + u) * p.a_cs];
        lane_table<Group>(a_u, out + (g * MR + r) * entries);
      }
  }
  template <std::size_t Group, std::size_t MR, std::size_t NV>
  static void lookup_tile(std::size_t groups, const float* tables, const std::int32_t* ip, float* c, std::size_t ldc,
                          std::size_t h, std::size_t w, bool first) {
    constexpr std::size_t entries = table_entries<Group>;
    fb acc[MR][NV];
    load_panel_tile(acc, first, c, ldc, h, w);
    for (std::size_t g = 0; g < groups; ++g) {
      ib idx[NV];
      for (std::size_t v = 0; v < NV; ++v) idx[v] = ib::load_aligned(ip + g * NV * lanes + v * lanes);
      for (std::size_t r = 0; r < MR; ++r) {
        const float* t = tables + (g * MR + r) * entries;
        if constexpr (entries == 16) {
          const auto table = simd_compat::load_table16<A>(t);
          for (std::size_t v = 0; v < NV; ++v)
            acc[r][v] = base::accumulate_lookup(acc[r][v], simd_compat::lookup16<A>(table, idx[v]), v);
        } else {
          const auto table = simd_compat::load_table32<A>(t);
          // Plain adds: with the two-source permute, sums on the FMA unit measured 2-5% slower.
          for (std::size_t v = 0; v < NV; ++v) acc[r][v] = acc[r][v] + simd_compat::lookup32<A>(table, idx[v]);
        }
      }
    }
    store_panel_tile(acc, c, ldc, h, w);
  }
  // One group's signed sum for `lanes` columns starting at j0, formed in place with selects: the table
  // entry those columns' indices would pick, computed the same way.
  template <std::size_t Group>
  static fb group_sum(const lookup_operands& p, std::size_t i, std::size_t q0, std::size_t j0) {
    fb s[Group];
    for (std::size_t u = 0; u < Group; ++u) {
      const std::size_t q = q0 + u;
      const fb av(q < p.k ? p.a[i * p.a_rs + q * p.a_cs] : 0.0f);
      const auto sign = q < p.k ? static_cast<std::uint32_t>(tile_bits(p.sign + q * p.ldb, j0)) & lane_mask : 0u;
      if constexpr (Group == 4) {
        s[u] = xsimd::select(simd_compat::mask_from_bits<A>(sign), av, -av);
      } else {
        const auto nz = q < p.k ? static_cast<std::uint32_t>(tile_bits(p.nonzero + q * p.ldb, j0)) & lane_mask : 0u;
        s[u] = xsimd::select(simd_compat::mask_from_bits<A>(nz),
                             xsimd::select(simd_compat::mask_from_bits<A>(sign), av, -av), fb(0.0f));
      }
    }
    if constexpr (Group == 4) return (s[0] + s[1]) + (s[2] + s[3]);
    return (s[0] + s[1]) + s[2];
  }
  // Few rows (batch-1 inference): packing would cost more than it saves.
  template <std::size_t Group>
  static void lookup_gemm_few_rows(const lookup_operands& p) {
    for (std::size_t i = 0; i < p.m; ++i)
      for (std::size_t j0 = 0; j0 < p.n; j0 += lanes) {
        fb acc(0.0f);
        for (std::size_t q0 = 0; q0 < p.k; q0 += Group) acc = acc + group_sum<Group>(p, i, q0, j0);
        const std::size_t w = std::min(lanes, p.n - j0);
        if (w == lanes) {
          acc.store_unaligned(p.c + i * p.ldc + j0);
        } else {
          alignas(64) float out[lanes];
          acc.store_aligned(out);
          for (std::size_t j = 0; j < w; ++j) p.c[i * p.ldc + j0 + j] = out[j];
        }
      }
  }
  template <std::size_t Group, std::size_t MR, std::size_t NV>
  static void lookup_gemm(const lookup_operands& p) {
    if (p.m == 0 || p.n == 0) return;
    if (p.k == 0) return zero_output(p.m, p.n, p.c, p.ldc);
    if (p.m < 4) return lookup_gemm_few_rows<Group>(p);
    const gemm_blocks bl = lookup_blocks(p.caches, Group, table_entries<Group>, MR, NV * lanes);
    auto* indices = at_bytes<std::int32_t>(p.workspace, 0);
    float* tables = at_bytes<float>(p.workspace, 4 * (bl.kc / Group * bl.nc));
    for (std::size_t pc = 0; pc < p.k; pc += bl.kc) {
      const std::size_t kb = std::min(bl.kc, p.k - pc), groups = (kb + Group - 1) / Group;
      for (std::size_t jc = 0; jc < p.n; jc += bl.nc) {
        const std::size_t nb = std::min(bl.nc, p.n - jc);
        pack_indices<Group, NV>(p, pc, kb, jc, nb, indices);
        for (std::size_t i0 = 0; i0 < p.m; i0 += MR) {
          const std::size_t h = std::min(MR, p.m - i0);
          build_tables<Group, MR>(p, i0, h, pc, kb, tables);
          for (std::size_t j0 = 0; j0 < nb; j0 += NV * lanes)
            lookup_tile<Group, MR, NV>(groups, tables, indices + j0 * groups, p.c + i0 * p.ldc + jc + j0, p.ldc, h,
                                       std::min(NV * lanes, nb - j0), pc == 0);
        }
      }
    }
  }

  // Runs the grouped lookup with the register tile that fits n.
  template <std::size_t Group>
  static void run(const lookup_operands& p) {
    if (p.n <= narrow_nv * lanes)
      lookup_gemm<Group, narrow_mr, narrow_nv>(p);
    else
      lookup_gemm<Group, lookup_mr, lookup_nv>(p);
  }
  // Workspace for either tile.
  template <std::size_t Group>
  static std::size_t workspace(const cache_sizes& caches) {
    return std::max(lookup_workspace_bytes(caches, Group, table_entries<Group>, lookup_mr, lookup_nr),
                    lookup_workspace_bytes(caches, Group, table_entries<Group>, narrow_mr, narrow_nv * lanes));
  }
};

}  // namespace
}  // namespace fewmul::kernels::detail

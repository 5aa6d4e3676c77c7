// The copy-table kernel's own thread code (kernels/copy_kernel.h), run on
// the CPU tile by tile and thread by thread (RunCopyKernelOnHost), against
// the table's semantics (ExecuteCopyTableOnHost): every destination byte and
// every guard word equal, for the pack layouts' tables and for random
// tables whose rows run from one element to several tiles, at every
// relative alignment, plain and transposed, guarded and not. The GPU runs
// the same functions (kernels_gpu_test compares the two there).
#include "kernels/copy_kernel_host.h"

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/copy_kernel.h"
#include "kernels/pack_table.h"
#include "kernels/test_layouts.h"

namespace weightcast {
namespace {

using Bytes = std::vector<std::byte>;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// Runs `table` both ways over copies of `dst` (and of the guard words);
// the destinations must come out equal byte for byte.
// Returns how many guard words hold a finding.
int ExpectKernelEqualsSemantics(const std::vector<CopyEntry>& table, Bytes& dst,
                                size_t guard_words, const char* label) {
  // The table's addresses point into `dst`: run the semantics first into a
  // copy by shifting the entries' destinations.
  Bytes want = dst;
  std::vector<CopyEntry> shifted = table;
  const int64_t delta = static_cast<int64_t>(Addr(want.data())) - static_cast<int64_t>(Addr(dst.data()));
  for (CopyEntry& e : shifted) e.dst = static_cast<uint64_t>(static_cast<int64_t>(e.dst) + delta);
  std::vector<uint64_t> want_guard(guard_words, kNoFinding);
  ExecuteCopyTableOnHost(shifted, want_guard.empty() ? nullptr : want_guard.data());
  std::vector<unsigned long long> got_guard(guard_words, kNoFinding);
  EXPECT_TRUE(RunCopyKernelOnHost(table.data(), table.size(),
                                  got_guard.empty() ? nullptr : got_guard.data()))
      << label;
  size_t first = dst.size();
  for (size_t i = 0; i < dst.size() && first == dst.size(); ++i) {
    if (dst[i] != want[i]) first = i;
  }
  EXPECT_EQ(first, dst.size()) << label << ": first difference at destination byte " << first;
  int findings = 0;
  for (size_t w = 0; w < guard_words; ++w) {
    EXPECT_EQ(got_guard[w], want_guard[w]) << label << ": guard word " << w;
    findings += want_guard[w] != kNoFinding;
  }
  return findings;
}

class CopyKernelLayoutTest : public ::testing::TestWithParam<testing::Layout> {};

TEST_P(CopyKernelLayoutTest, PackAndUnpackTablesEqualTheirSemantics) {
  const testing::Layout& l = GetParam();
  auto data = testing::RandomSources(l, 3);
  std::vector<uint64_t> addrs;
  for (auto& d : data) addrs.push_back(Addr(d.data()));
  std::vector<uint32_t> slots(data.size());
  for (uint32_t i = 0; i < slots.size(); ++i) slots[i] = i;
  // Three elements into the bucket: element aligned (transposes move whole
  // elements) but not 16-byte aligned.
  const uint64_t bucket_offset = 3 * DTypeSize(l.out.source_dtype);
  for (auto [off, len] : testing::OddRanges(l.out)) {
    for (bool guarded : {false, true}) {
      Bytes bucket(len + bucket_offset + 8, std::byte{0x5A});
      std::vector<CopyEntry> table;
      ASSERT_TRUE(BuildPackTable(l.out, off, len, addrs, Addr(bucket.data()), bucket_offset, &table,
                                 guarded ? std::span<const uint32_t>(slots)
                                         : std::span<const uint32_t>())
                      .ok());
      ExpectKernelEqualsSemantics(table, bucket, guarded ? slots.size() : 0, l.label.c_str());
      if (HasFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CopyKernelLayoutTest, ::testing::ValuesIn(testing::PackLayouts()),
                         [](const auto& info) { return info.param.label; });

// Random entries over one source arena into disjoint destination regions:
// row lengths from one element to several 16 KiB tiles (each side of the
// team and long-row thresholds), strided and dense, every offset mod 16.
TEST(CopyKernelTest, RandomTablesEqualTheirSemantics) {
  std::mt19937_64 rng(12);
  Bytes src(4 << 20);
  for (auto& b : src) b = static_cast<std::byte>(rng());
  // A float pattern here and there: bf16 / f32 NaN and +-inf for the guard.
  for (size_t i = 0; i + 4 <= src.size(); i += 997) {
    const uint32_t f = (rng() % 3 == 0) ? 0x7F800000u : (rng() % 2 ? 0xFF800000u : 0x7FC00001u);
    std::memcpy(src.data() + i, &f, 4);
  }
  const uint64_t row_lengths[] = {1,    2,    3,    15,   16,   17,    31,    64,   100,
                                  511,  512,  513,  1000, 4095, 4096,  4097,  8192, 16383,
                                  16384, 16385, 40000};
  int findings = 0, transposes = 0, teams = 0, long_rows = 0;
  for (int trial = 0; trial < 60; ++trial) {
    std::vector<CopyEntry> table;
    uint64_t dst_bytes = 0;
    struct Place {
      uint64_t at, bytes;
    };
    std::vector<Place> places;
    const int entries = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < entries; ++k) {
      CopyEntry e;
      const uint32_t sizes[] = {1, 2, 4, 8};
      e.elem_size = sizes[rng() % 4];
      e.transpose = (rng() % 5 == 0) ? 1 : 0;
      if (e.transpose) {
        e.rows = 1 + rng() % 70;
        e.cols = 1 + rng() % 70;
      } else {
        const uint64_t row = row_lengths[rng() % std::size(row_lengths)];
        e.cols = std::max<uint64_t>(1, row / e.elem_size);
        e.rows = 1 + rng() % (row > 4096 ? 4 : 300);
      }
      const uint64_t row_bytes = e.cols * e.elem_size;
      const bool aligned = e.transpose || rng() % 2 == 0;  // transposes move whole elements
      const uint64_t pad = (rng() % 3) * e.elem_size + (aligned ? 0 : rng() % 3);
      e.src_row_stride = row_bytes + pad;
      const uint64_t src_span = (e.rows - 1) * e.src_row_stride + row_bytes;
      if (src_span + 64 > src.size()) continue;
      uint64_t src_off = rng() % (src.size() - src_span - 32);
      if (aligned) src_off -= src_off % e.elem_size;
      e.src = Addr(src.data()) + src_off;
      // Destination: dense or strided, at any offset mod 16.
      const uint64_t dst_rows = e.transpose ? e.cols : e.rows;
      const uint64_t dst_row = e.transpose ? e.rows * e.elem_size : row_bytes;
      e.dst_row_stride = dst_row + (rng() % 2) * e.elem_size * (1 + rng() % 3);
      const uint64_t dst_span = (dst_rows - 1) * e.dst_row_stride + dst_row;
      uint64_t dst_off = dst_bytes + rng() % 16;
      if (aligned) dst_off += (e.elem_size - dst_off % e.elem_size) % e.elem_size;
      places.push_back(Place{dst_off, dst_span});
      dst_bytes = dst_off + dst_span + 16;
      if (aligned && (e.elem_size == 2 || e.elem_size == 4) && rng() % 2 == 0) {
        e.guard_type = static_cast<uint32_t>(e.elem_size == 2 ? GuardType::kBF16 : GuardType::kF32);
        e.guard_slot = static_cast<uint32_t>(rng() % 3);
        e.guard_base = Addr(src.data()) + (src_off % e.elem_size);
      }
      e.dst = dst_off;  // made absolute below
      table.push_back(e);
    }
    Bytes dst(dst_bytes + 16, std::byte{0xC3});
    for (CopyEntry& e : table) e.dst += Addr(dst.data());
    findings += ExpectKernelEqualsSemantics(table, dst, 3, ("trial " + std::to_string(trial)).c_str());
    if (HasFailure()) return;
    for (const CopyEntry& e : table) {
      if (e.transpose) {
        ++transposes;
      } else {
        ++(RowTilingOf(e).tiles_per_row > 0 ? long_rows : teams);
      }
    }
    // Bytes outside the entries' destinations are untouched.
    std::vector<bool> covered(dst.size(), false);
    for (const Place& p : places) {
      for (uint64_t i = p.at; i < p.at + p.bytes; ++i) covered[i] = true;
    }
    for (size_t i = 0; i < dst.size(); ++i) {
      if (!covered[i]) ASSERT_EQ(dst[i], std::byte{0xC3}) << "trial " << trial << " byte " << i;
    }
  }
  // The random tables reached every path.
  EXPECT_GT(findings, 10);
  EXPECT_GT(transposes, 10);
  EXPECT_GT(teams, 50);
  EXPECT_GT(long_rows, 10);
}

// The tiling itself: short rows are grouped (a tile holds about 16 KiB of
// them), teams are a power of two within a warp, long rows are cut.
TEST(CopyKernelTest, ShortRowsShareATileAndLongRowsAreCut) {
  CopyEntry column;  // a column of a transposed piece: rows of one bf16
  column.elem_size = 2;
  column.cols = 1;
  column.rows = 5000;
  RowTiling t = RowTilingOf(column);
  EXPECT_EQ(t.tiles_per_row, 0u);
  EXPECT_EQ(t.lanes, 1u);
  EXPECT_EQ(t.rows_per_tile, 8192u);
  EXPECT_EQ(TilesOf(column), 1u);  // was 5000 blocks of one element each

  CopyEntry w2;  // a TP slice of down_proj: rows of 384 bf16
  w2.elem_size = 2;
  w2.cols = 384;
  w2.rows = 2048;
  t = RowTilingOf(w2);
  EXPECT_EQ(t.lanes, 32u);
  EXPECT_EQ(t.rows_per_tile, 16u);  // 8 warps, 2 rows each
  EXPECT_EQ(TilesOf(w2), 128u);

  CopyEntry small;  // 48-byte rows: teams of 4 lanes
  small.elem_size = 4;
  small.cols = 12;
  small.rows = 100;
  EXPECT_EQ(RowTilingOf(small).lanes, 4u);

  CopyEntry long_row;
  long_row.elem_size = 1;
  long_row.cols = 40000;
  long_row.rows = 3;
  t = RowTilingOf(long_row);
  EXPECT_EQ(t.tiles_per_row, 3u);
  EXPECT_EQ(TilesOf(long_row), 9u);
  for (uint64_t bytes = 1; bytes <= kTeamRowBytes; bytes = bytes * 2 + 1) {
    CopyEntry e;
    e.elem_size = 1;
    e.cols = bytes;
    e.rows = 1;
    const RowTiling k = RowTilingOf(e);
    EXPECT_EQ(32 % k.lanes, 0u) << bytes;
    EXPECT_GE(k.lanes * 16, std::min<uint64_t>(bytes, 32 * 16)) << bytes;
    EXPECT_EQ(k.rows_per_tile % (kCopyThreads / k.lanes), 0u) << bytes;
  }
}

TEST(CopyKernelTest, TablesTheLauncherRefusesAreRefused) {
  std::vector<std::byte> a(64), b(64);
  CopyEntry e;
  e.src = Addr(a.data());
  e.dst = Addr(b.data());
  e.rows = 1;
  e.cols = 8;
  e.src_row_stride = e.dst_row_stride = 8;
  e.elem_size = 3;
  EXPECT_FALSE(RunCopyKernelOnHost(&e, 1));
  e.elem_size = 1;
  e.src = 0;
  EXPECT_FALSE(RunCopyKernelOnHost(&e, 1));
  e.src = Addr(a.data()) + 1;
  e.elem_size = 2;
  e.transpose = 1;
  EXPECT_FALSE(RunCopyKernelOnHost(&e, 1));  // a transpose of half elements
  EXPECT_EQ(b, std::vector<std::byte>(64));   // nothing ran
}

}  // namespace
}  // namespace weightcast

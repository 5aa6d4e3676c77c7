#include "kernels/pack_table.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/pack_reference.h"
#include "kernels/test_layouts.h"

namespace weightcast {
namespace {

using testing::Layout;

std::vector<uint64_t> Addrs(std::vector<std::vector<std::byte>>& data) {
  std::vector<uint64_t> a;
  for (auto& d : data) a.push_back(reinterpret_cast<uint64_t>(d.data()));
  return a;
}

class PackTableTest : public ::testing::TestWithParam<Layout> {};

TEST_P(PackTableTest, TableOnHostEqualsPackOutputRange) {
  const Layout& l = GetParam();
  auto data = RandomSources(l, 7);
  ASSERT_TRUE(ValidateOutputTensor(l.out, l.sources).ok());
  std::vector<HostSource> hs;
  for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
  const std::vector<uint64_t> addrs = Addrs(data);
  for (auto [off, len] : testing::OddRanges(l.out)) {
    // The range lands at an odd bucket offset, after other bytes.
    const uint64_t bucket_offset = 3;
    std::vector<std::byte> expect(len + 8, std::byte{0x5A}), got(len + 8, std::byte{0x5A});
    ASSERT_TRUE(PackOutputRange(l.out, hs, off, len, expect.data() + bucket_offset).ok());
    std::vector<CopyEntry> table;
    ASSERT_TRUE(BuildPackTable(l.out, off, len, addrs, reinterpret_cast<uint64_t>(got.data()),
                               bucket_offset, &table)
                    .ok());
    ExecuteCopyTableOnHost(table);
    ASSERT_EQ(0, std::memcmp(expect.data(), got.data(), got.size()))
        << l.label << " range " << off << "+" << len;
    // Every entry is a full rectangle: tiles are counted.
    EXPECT_GT(TotalTiles(table), 0u);
  }
}

// The guard of the table (the kernel's semantics, on the CPU) finds what the
// CPU packer's finds: per source, the lowest non-finite index read. Random
// bytes hold NaN and +-inf patterns at 1/256 of float elements.
TEST_P(PackTableTest, TableGuardFindsWhatThePackerGuardFinds) {
  const Layout& l = GetParam();
  auto data = RandomSources(l, 11);
  std::vector<HostSource> hs;
  for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
  const std::vector<uint64_t> addrs = Addrs(data);
  std::vector<uint32_t> slots(data.size());
  for (uint32_t i = 0; i < slots.size(); ++i) slots[i] = static_cast<uint32_t>(slots.size()) - 1 - i;
  const bool checked = GuardTypeOf(l.out.source_dtype) != GuardType::kNone;
  int found = 0;
  for (auto [off, len] : testing::OddRanges(l.out)) {
    std::vector<std::byte> expect(len), got(len);
    FiniteGuard cpu;
    ASSERT_TRUE(PackOutputRange(l.out, hs, off, len, expect.data(), &cpu).ok());
    std::vector<CopyEntry> table;
    ASSERT_TRUE(BuildPackTable(l.out, off, len, addrs, reinterpret_cast<uint64_t>(got.data()), 0,
                               &table, slots)
                    .ok());
    std::vector<uint64_t> words(slots.size(), kNoFinding);
    ExecuteCopyTableOnHost(table, words.data());
    ASSERT_EQ(expect, got);
    for (uint32_t i = 0; i < slots.size(); ++i) {
      EXPECT_EQ(words[slots[i]], cpu.FindingOf(i)) << l.label << " source " << i << " range "
                                                   << off << "+" << len;
      found += cpu.FindingOf(i) != kNoFinding;
    }
    if (!checked) {
      EXPECT_FALSE(cpu.found()) << l.label;
    }
  }
  if (checked) {
    EXPECT_GT(found, 0) << l.label;  // the test data did hold some
  }
}

TEST_P(PackTableTest, PerSourceTablesInAnyOrderAssembleTheWholeOutput) {
  const Layout& l = GetParam();
  auto data = RandomSources(l, 5);
  std::vector<HostSource> hs;
  for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
  const uint64_t total = l.out.spec.ByteSize();
  std::vector<std::byte> expect(total), got(total, std::byte{0x5A});
  ASSERT_TRUE(PackOutputRange(l.out, hs, 0, total, expect.data()).ok());
  // Sources "arrive" last to first, each executed on its own.
  for (size_t k = data.size(); k-- > 0;) {
    std::vector<CopyEntry> table;
    ASSERT_TRUE(BuildPackTableForSource(l.out, static_cast<uint32_t>(k),
                                        reinterpret_cast<uint64_t>(data[k].data()),
                                        reinterpret_cast<uint64_t>(got.data()), &table)
                    .ok());
    ExecuteCopyTableOnHost(table);
  }
  ASSERT_EQ(0, std::memcmp(expect.data(), got.data(), total)) << l.label;
  // A source the output does not read adds nothing.
  std::vector<CopyEntry> none;
  ASSERT_TRUE(BuildPackTableForSource(l.out, static_cast<uint32_t>(data.size()), 0, 0, &none)
                  .ok());
  EXPECT_TRUE(none.empty());
}

TEST_P(PackTableTest, PerPieceTablesInReverseOrderAssembleTheWholeOutput) {
  const Layout& l = GetParam();
  auto data = RandomSources(l, 7);
  std::vector<HostSource> hs;
  for (size_t i = 0; i < data.size(); ++i) hs.push_back(HostSource{l.sources[i], data[i].data()});
  const uint64_t total = l.out.spec.ByteSize();
  std::vector<std::byte> expect(total), got(total, std::byte{0x5A});
  ASSERT_TRUE(PackOutputRange(l.out, hs, 0, total, expect.data()).ok());
  std::vector<uint64_t> starts;  // output element of each piece
  uint64_t at = 0;
  for (const Piece& p : l.out.pieces) {
    starts.push_back(at);
    at += p.NumElements();
  }
  for (size_t i = l.out.pieces.size(); i-- > 0;) {
    const uint32_t s = l.out.pieces[i].source;
    std::vector<CopyEntry> table;
    ASSERT_TRUE(BuildPackTableForPiece(l.out, i, starts[i],
                                       reinterpret_cast<uint64_t>(data[s].data()),
                                       reinterpret_cast<uint64_t>(got.data()), &table)
                    .ok());
    ExecuteCopyTableOnHost(table);
  }
  ASSERT_EQ(0, std::memcmp(expect.data(), got.data(), total)) << l.label;
  std::vector<CopyEntry> none;
  EXPECT_EQ(BuildPackTableForPiece(l.out, l.out.pieces.size(), 0, 0, 0, &none).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(none.empty());
}

TEST_P(PackTableTest, UnpackRestoresEveryPackedByte) {
  const Layout& l = GetParam();
  auto data = RandomSources(l, 11);
  const std::vector<uint64_t> addrs = Addrs(data);
  const uint64_t total = l.out.spec.ByteSize();
  std::vector<std::byte> bucket(total);
  std::vector<CopyEntry> pack;
  ASSERT_TRUE(BuildPackTable(l.out, 0, total, addrs, reinterpret_cast<uint64_t>(bucket.data()), 0,
                             &pack)
                  .ok());
  ExecuteCopyTableOnHost(pack);
  // Unpack into zeroed copies, then pack those again: same bucket.
  std::vector<std::vector<std::byte>> back;
  for (const auto& d : data) back.emplace_back(d.size(), std::byte{0});
  const std::vector<uint64_t> back_addrs = Addrs(back);
  std::vector<CopyEntry> unpack;
  ASSERT_TRUE(BuildUnpackTable(l.out, 0, total, back_addrs,
                               reinterpret_cast<uint64_t>(bucket.data()), 0, &unpack)
                  .ok());
  ExecuteCopyTableOnHost(unpack);
  std::vector<std::byte> again(total);
  std::vector<CopyEntry> repack;
  ASSERT_TRUE(BuildPackTable(l.out, 0, total, back_addrs,
                             reinterpret_cast<uint64_t>(again.data()), 0, &repack)
                  .ok());
  ExecuteCopyTableOnHost(repack);
  EXPECT_EQ(bucket, again) << l.label;
}

INSTANTIATE_TEST_SUITE_P(Layouts, PackTableTest, ::testing::ValuesIn(testing::PackLayouts()),
                         [](const auto& info) { return info.param.label; });

// Contiguous rows become one long row (the kernel tiles it), a copy that
// continues the call's previous one extends it, and entries the call did
// not make stay as they were.
TEST(PackTableMerge, ContiguousRowsAreOneEntryAndOthersAreLeftAlone) {
  const Layout plain = testing::PackLayouts()[0];  // [37, 53] bf16, one piece
  auto data = RandomSources(plain, 3);
  const std::vector<uint64_t> addrs = Addrs(data);
  const uint64_t total = plain.out.spec.ByteSize();
  std::vector<std::byte> bucket(total + 16);
  const auto dst = reinterpret_cast<uint64_t>(bucket.data());
  std::vector<CopyEntry> table;
  ASSERT_TRUE(BuildPackTable(plain.out, 0, total, addrs, dst, 0, &table).ok());
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0].rows, 1u);
  EXPECT_EQ(table[0].cols * table[0].elem_size, total);
  // An odd range: head, body and tail rows, all contiguous: still one.
  table.clear();
  ASSERT_TRUE(BuildPackTable(plain.out, 2 * 7, total - 2 * 20, addrs, dst, 0, &table).ok());
  EXPECT_EQ(table.size(), 1u);
  // The same range in two calls: the second does not touch the first's
  // entry (callers count what each call added: ParameterSink's bytes).
  table.clear();
  ASSERT_TRUE(BuildPackTable(plain.out, 0, 2 * 100, addrs, dst, 0, &table).ok());
  const CopyEntry first = table[0];
  ASSERT_TRUE(BuildPackTable(plain.out, 2 * 100, total - 2 * 100, addrs, dst + 2 * 100, 0, &table)
                  .ok());
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[0].cols, first.cols);
  EXPECT_EQ(table[1].cols * table[1].elem_size, total - 2 * 100);
  ExecuteCopyTableOnHost(table);
  EXPECT_EQ(0, std::memcmp(bucket.data(), data[0].data(), total));
  // w13 from TP halves of gate/up: each half is 12 contiguous rows of a
  // source, so one long row per piece (one entry of 12 rows before).
  const Layout w13 = testing::PackLayouts()[3];
  ASSERT_EQ(w13.label, "w13_tp");
  auto w13data = RandomSources(w13, 5);
  std::vector<std::byte> w13bucket(w13.out.spec.ByteSize());
  table.clear();
  ASSERT_TRUE(BuildPackTable(w13.out, 0, w13.out.spec.ByteSize(), Addrs(w13data),
                             reinterpret_cast<uint64_t>(w13bucket.data()), 0, &table)
                  .ok());
  ASSERT_EQ(table.size(), w13.out.pieces.size());
  for (const CopyEntry& e : table) EXPECT_EQ(e.rows, 1u);
  // A strided slice (w2) keeps one row per source row.
  const Layout w2 = testing::PackLayouts()[2];
  auto wdata = RandomSources(w2, 4);
  table.clear();
  ASSERT_TRUE(BuildPackTable(w2.out, 0, w2.out.spec.ByteSize(), Addrs(wdata), dst, 0, &table)
                  .ok());
  for (const CopyEntry& e : table) EXPECT_EQ(e.rows, 40u);
  // An unpack appended after entries of its own kind: those are untouched
  // (the unpack inverts only what it added).
  std::vector<CopyEntry> unpack;
  std::vector<std::byte> back(total), back2(total);
  const std::vector<uint64_t> b1 = {reinterpret_cast<uint64_t>(back.data())};
  const std::vector<uint64_t> b2 = {reinterpret_cast<uint64_t>(back2.data())};
  ASSERT_TRUE(BuildUnpackTable(plain.out, 0, 2 * 100, b1, dst, 0, &unpack).ok());
  const CopyEntry before = unpack[0];
  ASSERT_TRUE(BuildUnpackTable(plain.out, 2 * 100, total - 2 * 100, b1, dst + 2 * 100, 0, &unpack)
                  .ok());
  EXPECT_EQ(unpack[0].src, before.src);
  EXPECT_EQ(unpack[0].cols, before.cols);
  ASSERT_TRUE(BuildUnpackTable(plain.out, 0, total, b2, dst, 0, &unpack).ok());
  ExecuteCopyTableOnHost(unpack);
  EXPECT_EQ(0, std::memcmp(back.data(), data[0].data(), total));
  EXPECT_EQ(0, std::memcmp(back2.data(), data[0].data(), total));
}

TEST(PackTableErrors, RejectsBadRanges) {
  const Layout l = testing::PackLayouts()[0];
  std::vector<uint64_t> addrs = {0x1000};
  std::vector<CopyEntry> table;
  EXPECT_EQ(BuildPackTable(l.out, 1, 2, addrs, 0x2000, 0, &table).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildPackTable(l.out, 0, l.out.spec.ByteSize() + 2, addrs, 0x2000, 0, &table).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildPackTable(l.out, 0, 2, {}, 0x2000, 0, &table).code(),
            absl::StatusCode::kInvalidArgument);
  OutputTensor fp8 = l.out;
  fp8.quant = QuantKind::kFp8Weight;
  EXPECT_EQ(BuildPackTable(fp8, 0, 2, addrs, 0x2000, 0, &table).code(),
            absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace weightcast

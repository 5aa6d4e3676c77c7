#include "kernels/finite_guard.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

constexpr char kNonFinitePayload[] = "type.weightcast/non-finite-value";

static_assert(static_cast<uint32_t>(GuardType::kF16) == static_cast<uint32_t>(DType::kF16));
static_assert(static_cast<uint32_t>(GuardType::kBF16) == static_cast<uint32_t>(DType::kBF16));
static_assert(static_cast<uint32_t>(GuardType::kF32) == static_cast<uint32_t>(DType::kF32));
static_assert(static_cast<uint32_t>(GuardType::kF64) == static_cast<uint32_t>(DType::kF64));
static_assert(static_cast<uint32_t>(GuardType::kF8E4M3) == static_cast<uint32_t>(DType::kF8E4M3));
static_assert(static_cast<uint32_t>(GuardType::kF8E5M2) == static_cast<uint32_t>(DType::kF8E5M2));

}  // namespace

GuardType GuardTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16:
    case DType::kF32:
    case DType::kF64:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return static_cast<GuardType>(static_cast<uint32_t>(dtype));
    default:
      return GuardType::kNone;
  }
}

absl::string_view FiniteClassName(FiniteClass c) {
  switch (c) {
    case FiniteClass::kNaN: return "NaN";
    case FiniteClass::kPosInf: return "+inf";
    case FiniteClass::kNegInf: return "-inf";
    default: return "finite";
  }
}

absl::Status NonFiniteValueError(absl::string_view tensor, uint64_t index, FiniteClass c) {
  absl::Status s = absl::InvalidArgumentError(absl::StrCat(
      "tensor '", tensor, "': non-finite value (", FiniteClassName(c), ") at element ", index,
      "; the version is refused (allow_non_finite lets such values through)"));
  s.SetPayload(kNonFinitePayload, absl::Cord(std::to_string(index)));
  return s;
}

bool IsNonFiniteValueError(const absl::Status& status) {
  return status.GetPayload(kNonFinitePayload).has_value();
}

absl::Status WithMessagePrefix(const absl::Status& status, absl::string_view prefix) {
  absl::Status out(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

void FiniteGuard::ScanRun(uint32_t source, GuardType type, const std::byte* p,
                          uint64_t first_index, uint64_t n) {
  const NonFiniteLanes l = LanesOf(type);
  if (l.bytes == 0 || n == 0) return;
  const uint64_t bytes = n * l.bytes;
  // Whole words (lanes line up with elements: the run starts at an element),
  // then the tail element by element. A flagged word is resolved lane by lane.
  uint64_t at = 0;
  for (; at + 8 <= bytes; at += 8) {
    uint64_t w;
    std::memcpy(&w, p + at, 8);
    if (!WordHasNonFinite(w, l)) [[likely]] continue;
    for (uint64_t k = at; k < at + 8; k += l.bytes) {
      const FiniteClass c = ClassifyElement(LoadElementBits(p + k, l.bytes), l);
      if (c != FiniteClass::kFinite) {
        Record(source, EncodeFinding(first_index + k / l.bytes, c));
        return;  // the lowest index of this run
      }
    }
  }
  for (; at < bytes; at += l.bytes) {
    const FiniteClass c = ClassifyElement(LoadElementBits(p + at, l.bytes), l);
    if (c != FiniteClass::kFinite) {
      Record(source, EncodeFinding(first_index + at / l.bytes, c));
      return;
    }
  }
}

namespace {

// Two 64-bit lanes of an SSE2 register (GCC vector extension: any target).
using Words = uint64_t __attribute__((vector_size(16)));

// Copies `bytes` (a multiple of 64) and returns non-zero when some lane of
// the words copied is non-finite (WordHasNonFinite, branch-free).
uint64_t CopyBlocks(std::byte* dst, const std::byte* src, uint64_t bytes, const NonFiniteLanes& l) {
  const uint64_t ones = l.high >> (8 * l.bytes - 1);
  const Words mask = {l.mask, l.mask}, carry = {l.high - ones, l.high - ones},
              high = {l.high, l.high};
  auto flag = [&](Words v) { return ~(((v & mask) ^ mask) + carry) & high; };
  Words bad = {0, 0};
  for (uint64_t at = 0; at < bytes; at += 64) {
    // Four named registers (an array would go through the stack).
    Words a, b, c, d;
    std::memcpy(&a, src + at, 16);
    std::memcpy(&b, src + at + 16, 16);
    std::memcpy(&c, src + at + 32, 16);
    std::memcpy(&d, src + at + 48, 16);
    std::memcpy(dst + at, &a, 16);
    std::memcpy(dst + at + 16, &b, 16);
    std::memcpy(dst + at + 32, &c, 16);
    std::memcpy(dst + at + 48, &d, 16);
    bad |= flag(a) | flag(b) | flag(c) | flag(d);
  }
  return bad[0] | bad[1];
}

}  // namespace

void FiniteGuard::CopyRun(uint32_t source, GuardType type, std::byte* dst, const std::byte* src,
                          uint64_t first_index, uint64_t n) {
  const NonFiniteLanes l = LanesOf(type);
  // Chunks of 16 KiB: a flagged chunk is scanned again element by element
  // while it is still in L1 (rare: it holds a non-finite value).
  constexpr uint64_t kChunk = 16 << 10;
  const uint64_t bytes = n * l.bytes;
  for (uint64_t at = 0; at < bytes; at += kChunk) {
    const uint64_t len = std::min(kChunk, bytes - at);
    const uint64_t blocks = len / 64 * 64;
    const bool flagged = CopyBlocks(dst + at, src + at, blocks, l) != 0;
    std::memcpy(dst + at + blocks, src + at + blocks, len - blocks);
    if (flagged) {
      ScanRun(source, type, src + at, first_index + at / l.bytes, blocks / l.bytes);
    }
    // The tail (under 64 bytes, whole elements: len and blocks are).
    ScanRun(source, type, src + at + blocks, first_index + (at + blocks) / l.bytes,
            (len - blocks) / l.bytes);
  }
}

void FiniteGuard::Record(uint32_t source, uint64_t finding) {
  if (finding == kNoFinding) return;
  for (auto& [s, f] : findings_) {
    if (s == source) {
      f = std::min(f, finding);
      return;
    }
  }
  findings_.emplace_back(source, finding);
}

void FiniteGuard::Merge(const FiniteGuard& other) {
  for (const auto& [s, f] : other.findings_) Record(s, f);
}

uint64_t FiniteGuard::FindingOf(uint32_t source) const {
  for (const auto& [s, f] : findings_) {
    if (s == source) return f;
  }
  return kNoFinding;
}

absl::Status FiniteGuard::Report(std::span<const HostSource> sources) const {
  if (findings_.empty()) return absl::OkStatus();
  auto best = findings_.begin();
  for (auto it = findings_.begin(); it != findings_.end(); ++it) {
    if (it->first < best->first) best = it;
  }
  const std::string name = best->first < sources.size()
                               ? sources[best->first].spec.name
                               : absl::StrCat("source ", best->first);
  return NonFiniteValueError(name, FindingIndex(best->second), FindingClass(best->second));
}

}  // namespace weightcast

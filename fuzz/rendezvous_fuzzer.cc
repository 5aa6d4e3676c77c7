// Values read from the group rendezvous, which any rank holding the token
// may write: update announcements and receivers' publish reports.
// Property: what decodes re-encodes to the same value.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_check.h"
#include "protocol/group.h"

using namespace weightcast;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Announcement> a = DecodeAnnouncement(text);
  if (a.ok()) {
    absl::StatusOr<Announcement> again = DecodeAnnouncement(EncodeAnnouncement(*a));
    FUZZ_CHECK(again.ok() && *again == *a);
  }
  absl::StatusOr<RankVersion> r = DecodePublishReport(3, text);
  if (r.ok()) {
    absl::StatusOr<RankVersion> again =
        DecodePublishReport(3, EncodePublishReport(r->version, r->error));
    FUZZ_CHECK(again.ok() && *again == *r);
  }
  return 0;
}

#include "common/mapped_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"

namespace weightcast {
namespace {

std::string Dir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t != nullptr ? t : "/tmp";
}

void Write(const std::string& path, size_t bytes, char c) {
  std::ofstream(path, std::ios::binary) << std::string(bytes, c);
}

TEST(MappedFileTest, RefusesAFifoAtOnceInsteadOfWaitingForAWriter) {
  const std::string fifo = Dir() + "/tensor.fifo";
  ::unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto f = MappedFile::Open(fifo);  // would block forever without O_NONBLOCK
  ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().message(), fifo + ": not a regular file");
  EXPECT_EQ(MappedFile::Open(Dir()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MappedFileTest, NoticesAFileReplacedOrTruncatedSinceItWasMapped) {
  const std::string path = Dir() + "/weights.bin";
  Write(path, 8192, 'a');
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->CheckUnchanged().ok());
  // The trainer writes a new file and renames it over the path.
  Write(path + ".new", 8192, 'b');
  ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
  absl::Status s = (*f)->CheckUnchanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("replaced by another file"), std::string::npos) << s;
  EXPECT_EQ(static_cast<char>((*f)->data()[0]), 'a') << "the mapping keeps the old inode";
  // Truncated in place.
  auto g = MappedFile::Open(path);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  s = (*g)->CheckUnchanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("100 bytes, shorter than the 8192 mapped"), std::string::npos) << s;
  ::unlink(path.c_str());
  EXPECT_NE((*g)->CheckUnchanged().message().find("gone"), std::string::npos);
}

}  // namespace
}  // namespace weightcast

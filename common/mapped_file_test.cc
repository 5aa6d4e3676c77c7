#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

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

TEST(MappedFileTest, AFileTruncatedWhileReadReadsAsZerosAndIsReportedNotFatal) {
  const std::string path = Dir() + "/shrinking.bin";
  const long page = ::sysconf(_SC_PAGESIZE);
  Write(path, 3 * page, 'a');
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(::truncate(path.c_str(), page), 0);
  // Before, this read killed the process with SIGBUS.
  const volatile std::byte* data = (*f)->data();
  EXPECT_EQ(static_cast<char>(data[0]), 'a');
  EXPECT_EQ(static_cast<int>(data[2 * page + 7]), 0);
  EXPECT_EQ(static_cast<int>(data[page + 1]), 0);
  EXPECT_EQ((*f)->faults(), 2u);
  // Grown back, the file is still refused: what was read was not its bytes.
  ASSERT_EQ(::truncate(path.c_str(), 3 * page), 0);
  absl::Status s = (*f)->CheckUnchanged();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("truncated while it was read (2 page(s)"), std::string::npos) << s;
  // Another mapping of the same file is unaffected.
  auto g = MappedFile::Open(path);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->faults(), 0u);
  EXPECT_TRUE((*g)->CheckUnchanged().ok());
  ::unlink(path.c_str());
}

TEST(MappedFileDeathTest, ASigbusOutsideEveryMappingStillKills) {
  const std::string path = Dir() + "/raw.bin";
  const long page = ::sysconf(_SC_PAGESIZE);
  Write(path, 2 * page, 'r');
  ASSERT_TRUE(MappedFile::Open(path).ok());  // the handler is installed
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* raw = ::mmap(nullptr, 2 * page, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(raw, MAP_FAILED);
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  EXPECT_EXIT(
      {
        volatile char c = static_cast<const volatile char*>(raw)[page];
        (void)c;
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "");
  ::munmap(raw, 2 * page);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace weightcast

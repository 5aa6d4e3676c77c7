#include "common/checkpoint.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tools/testing/python.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path p = fs::path(tmp ? tmp : "/tmp") / name;
  fs::remove_all(p);
  return p.string();
}

struct Model {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
};

Model MakeModel() {
  Model m;
  std::mt19937_64 rng(9);
  for (int i = 0; i < 5; ++i) {
    m.specs.push_back(TensorSpec{"t" + std::to_string(i), DType::kF32, {10 + i, 100}});
    m.data.emplace_back(m.specs.back().ByteSize());
    for (auto& b : m.data.back()) b = static_cast<std::byte>(rng());
  }
  return m;
}

absl::StatusOr<std::string> WriteVersion(const std::string& root, uint64_t v, const Model& m,
                                         uint64_t shard_bytes) {
  auto w = CheckpointWriter::Begin(root, v, m.specs, R"({"model_type":"dense"})", shard_bytes);
  if (!w.ok()) return w.status();
  for (size_t i = 0; i < m.specs.size(); ++i) {
    // In two pieces, second first.
    const uint64_t n = m.specs[i].ByteSize(), half = n / 2;
    if (auto s = (*w)->Write(i, half, m.data[i].data() + half, n - half); !s.ok()) return s;
    if (auto s = (*w)->Write(i, 0, m.data[i].data(), half); !s.ok()) return s;
  }
  return (*w)->Commit();
}

TEST(CheckpointTest, ShardPlanNamesAndSingleShard) {
  Model m = MakeModel();  // 4000, 4400, 4800, 5200, 5600 bytes
  const std::string root = FreshDir("plan");
  auto w = CheckpointWriter::Begin(root, 1, m.specs, "", 9000);
  ASSERT_TRUE(w.ok());
  // 4000 + 4400 fit in 9000; 4800 + 5200 do not.
  EXPECT_EQ((*w)->ShardNames(),
            (std::vector<std::string>{"model-00001-of-00004.safetensors",
                                      "model-00001-of-00004.safetensors",
                                      "model-00002-of-00004.safetensors",
                                      "model-00003-of-00004.safetensors",
                                      "model-00004-of-00004.safetensors"}));
  (*w)->Abort();
  // A tensor larger than the limit gets a shard of its own.
  w = CheckpointWriter::Begin(root, 1, m.specs, "", 100);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->ShardNames()[4], "model-00005-of-00005.safetensors");
  (*w)->Abort();
  w = CheckpointWriter::Begin(root, 1, m.specs, "", 1 << 30);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->ShardNames()[4], "model.safetensors");
}

TEST(CheckpointTest, CommitPublishesAtomicallyAndReadsBack) {
  Model m = MakeModel();
  const std::string root = FreshDir("commit");
  auto path = WriteVersion(root, 7, m, 9000);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root + "/step_7");
  EXPECT_EQ(CheckpointWriter::ReadLatest(root).value(), 7u);
  auto dir = CheckpointDir::Open(*path);
  ASSERT_TRUE(dir.ok()) << dir.status();
  ASSERT_EQ(dir->tensors().size(), m.specs.size());
  for (const CheckpointTensor& t : dir->tensors()) {
    const int i = std::stoi(t.spec.name.substr(1));
    EXPECT_EQ(t.spec, m.specs[i]);
    auto f = SafetensorsFile::Open(t.path);
    ASSERT_TRUE(f.ok());
    std::ifstream in(t.path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(std::memcmp(bytes.data() + t.file_offset, m.data[i].data(), m.data[i].size()), 0);
  }
  EXPECT_NE(dir->config_json().find("dense"), std::string::npos);
  // Nothing temporary is left.
  for (const auto& e : fs::directory_iterator(root)) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
  }
  // The same version again is refused; the published one is untouched.
  EXPECT_EQ(WriteVersion(root, 7, m, 9000).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckpointDir::Open(*path).ok());
}

TEST(CheckpointTest, AbortAndDestructionLeaveNothingAndKeepThePreviousVersion) {
  Model m = MakeModel();
  const std::string root = FreshDir("abort");
  ASSERT_TRUE(WriteVersion(root, 1, m, 1 << 20).ok());
  {
    auto w = CheckpointWriter::Begin(root, 2, m.specs, "", 1 << 20);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(0, 0, m.data[0].data(), 16).ok());
    // Incomplete: commit must fail and publish nothing.
    EXPECT_FALSE((*w)->Commit().ok());
  }
  {
    auto w = CheckpointWriter::Begin(root, 3, m.specs, "", 1 << 20);
    ASSERT_TRUE(w.ok());
    (*w)->Abort();
  }
  { auto w = CheckpointWriter::Begin(root, 4, m.specs, "", 1 << 20); }  // dropped
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(root)) entries.push_back(e.path().filename());
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{"LATEST", "step_1"}));
  EXPECT_EQ(CheckpointWriter::ReadLatest(root).value(), 1u);
}

// Writes every byte of `m` into a writer of version `v`.
std::unique_ptr<CheckpointWriter> Filled(const std::string& root, uint64_t v, const Model& m,
                                         uint32_t mode = CheckpointWriter::kDefaultFileMode) {
  auto w = CheckpointWriter::Begin(root, v, m.specs, R"({"model_type":"dense"})", 1 << 20, mode);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  for (size_t i = 0; i < m.specs.size(); ++i) {
    EXPECT_TRUE((*w)->Write(i, 0, m.data[i].data(), m.specs[i].ByteSize()).ok());
  }
  return *std::move(w);
}

std::vector<std::string> VisibleEntries(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename();
    if (name.rfind(".tmp-", 0) != 0) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(CheckpointTest, PrepareWritesEverythingAndShowsNothingUntilCommitRenames) {
  Model m = MakeModel();
  const std::string root = FreshDir("two_phase");
  ASSERT_TRUE(WriteVersion(root, 1, m, 1 << 20).ok());
  std::unique_ptr<CheckpointWriter> w = Filled(root, 2, m);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->Prepare().ok());
  // Prepared: index, config and the next LATEST exist, under temporary names.
  bool index = false, config = false, latest = false;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string p = e.path().string();
    if (p.find("/.tmp-step_2") == std::string::npos) continue;
    index = index || e.path().filename() == "model.safetensors.index.json";
    config = config || e.path().filename() == "config.json";
    latest = latest || absl::EndsWith(p, ".LATEST");
  }
  EXPECT_TRUE(index && config && latest);
  EXPECT_EQ(VisibleEntries(root), (std::vector<std::string>{"LATEST", "step_1"}));
  EXPECT_EQ(CheckpointWriter::ReadLatest(root).value(), 1u);
  absl::StatusOr<std::string> path = w->Commit();
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(CheckpointWriter::ReadLatest(root).value(), 2u);
  EXPECT_TRUE(CheckpointDir::Open(*path).ok());
  // Renames only: nothing temporary is left.
  for (const auto& e : fs::directory_iterator(root)) {
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
  }
}

TEST(CheckpointTest, AnExistingStepFailsPrepareAndAFailedLatestUndoesTheStepRename) {
  Model m = MakeModel();
  const std::string root = FreshDir("two_phase_fail");
  ASSERT_TRUE(WriteVersion(root, 1, m, 1 << 20).ok());
  fs::create_directories(root + "/step_2");
  std::unique_ptr<CheckpointWriter> w = Filled(root, 2, m);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->Prepare().code(), absl::StatusCode::kFailedPrecondition);
  w.reset();
  fs::remove(root + "/step_2");
  // LATEST cannot be replaced (a directory in its place): the step_3 rename
  // is undone, so no step_3 shows that LATEST does not name.
  fs::remove(root + "/LATEST");
  fs::create_directories(root + "/LATEST/x");
  w = Filled(root, 3, m);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->Prepare().ok());
  absl::StatusOr<std::string> c = w->Commit();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(c.status().message().find("LATEST"), std::string::npos) << c.status();
  EXPECT_FALSE(fs::exists(root + "/step_3"));
  w.reset();
  EXPECT_EQ(VisibleEntries(root), (std::vector<std::string>{"LATEST", "step_1"}));
  for (const auto& e : fs::directory_iterator(root)) {
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
  }
}

TEST(CheckpointTest, FilesGetTheConfiguredMode) {
  Model m = MakeModel();
  const std::string root = FreshDir("modes");
  const mode_t old_umask = ::umask(0);
  for (uint32_t mode : {0600u, 0640u, 0644u}) {
    std::unique_ptr<CheckpointWriter> w = Filled(root, mode, m, mode);
    ASSERT_NE(w, nullptr);
    absl::StatusOr<std::string> path = w->Commit();
    ASSERT_TRUE(path.ok()) << path.status();
    for (const auto& e : fs::directory_iterator(*path)) {
      EXPECT_EQ(static_cast<uint32_t>(e.status().permissions()), mode) << e.path();
    }
    EXPECT_EQ(static_cast<uint32_t>(fs::status(*path).permissions()),
              mode | ((mode & 0444) >> 2));
    EXPECT_EQ(static_cast<uint32_t>(fs::status(root + "/LATEST").permissions()), mode);
  }
  ::umask(old_umask);
  EXPECT_EQ(CheckpointWriter::Begin(root, 9, m.specs, "", 1 << 20, 0755).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckpointWriter::Begin(root, 9, m.specs, "", 1 << 20, 0044).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, KeepNewestRemovesOldVersionsButNeverLatest) {
  const std::string root = FreshDir("keep");
  Model m = MakeModel();
  for (uint64_t v : {1, 2, 3, 10}) ASSERT_TRUE(WriteVersion(root, v, m, 1 << 20).ok());
  fs::create_directories(root + "/step_notanumber");  // not ours: kept
  absl::StatusOr<size_t> removed = CheckpointWriter::KeepNewest(root, 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2u);
  EXPECT_FALSE(fs::exists(root + "/step_1"));
  EXPECT_FALSE(fs::exists(root + "/step_2"));
  EXPECT_TRUE(fs::exists(root + "/step_3"));
  EXPECT_TRUE(fs::exists(root + "/step_10"));  // numerically, not by name
  EXPECT_TRUE(fs::exists(root + "/step_notanumber"));
  // LATEST names an older one (a receiver republished it): it stays.
  std::ofstream(root + "/LATEST") << "3\n";
  EXPECT_EQ(*CheckpointWriter::KeepNewest(root, 1), 0u);
  EXPECT_TRUE(fs::exists(root + "/step_3"));
  EXPECT_EQ(CheckpointWriter::KeepNewest(root, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, CleanStaleTempsAndReaderRejections) {
  const std::string root = FreshDir("stale");
  fs::create_directories(root + "/.tmp-step_5-1-0");
  ASSERT_TRUE(CheckpointWriter::CleanStaleTemps(root).ok());
  EXPECT_FALSE(fs::exists(root + "/.tmp-step_5-1-0"));
  EXPECT_EQ(CheckpointWriter::ReadLatest(root).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CheckpointDir::Open(root).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CheckpointDir::Open(root + "/missing").status().code(), absl::StatusCode::kNotFound);
  // The same tensor in two shards.
  std::vector<std::byte> d(4);
  std::vector<HostSource> t = {{TensorSpec{"x", DType::kF32, {1}}, d.data()}};
  ASSERT_TRUE(WriteSafetensors(root + "/a.safetensors", t, {}).ok());
  ASSERT_TRUE(WriteSafetensors(root + "/b.safetensors", t, {}).ok());
  auto dup = CheckpointDir::Open(root);
  ASSERT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dup.status().message().find("'x' is in both"), std::string::npos);
  // An index that disagrees with the shards.
  fs::remove(root + "/b.safetensors");
  std::ofstream(root + "/model.safetensors.index.json") << R"({"weight_map":{"x":"b.safetensors"}})";
  auto bad_index = CheckpointDir::Open(root);
  ASSERT_EQ(bad_index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_index.status().message().find("'x'"), std::string::npos);
}

TEST(CheckpointTest, PythonReadsACommittedMultiShardCheckpoint) {
  WC_REQUIRE_PYTHON("safetensors, numpy");
  Model m = MakeModel();
  const std::string root = FreshDir("py");
  auto path = WriteVersion(root, 1, m, 9000);
  ASSERT_TRUE(path.ok());
  const std::string script = root + "/check.py";
  std::ofstream(script) << "import json, sys, numpy as np\n"
                           "from safetensors.numpy import load_file\n"
                           "d = sys.argv[1]\n"
                           "idx = json.load(open(d + '/model.safetensors.index.json'))\n"
                           "got = {}\n"
                           "for shard in sorted(set(idx['weight_map'].values())):\n"
                           "    got.update(load_file(d + '/' + shard))\n"
                           "assert sorted(got) == ['t0','t1','t2','t3','t4'], sorted(got)\n"
                           "assert idx['metadata']['total_size'] == sum(v.nbytes for v in got.values())\n"
                           "for k, v in got.items(): open(d + '/' + k + '.bin', 'wb').write(v.tobytes())\n";
  ASSERT_EQ(testing::RunPython(script + " " + *path), 0);
  for (size_t i = 0; i < m.specs.size(); ++i) {
    std::ifstream in(*path + "/t" + std::to_string(i) + ".bin", std::ios::binary);
    std::string got((std::istreambuf_iterator<char>(in)), {});
    ASSERT_EQ(got.size(), m.data[i].size());
    EXPECT_EQ(std::memcmp(got.data(), m.data[i].data(), got.size()), 0);
  }
}

}  // namespace
}  // namespace weightcast

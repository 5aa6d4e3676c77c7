// weightcastctl: drives weightcastd daemons from scripts and terminals.
//
//   weightcastctl --addr unix:/tmp/wc0.sock init --host 127.0.0.1 --port 29501 ...
//   weightcastctl --addr ... register --descriptors tensors.json | --checkpoint-dir DIR
//   weightcastctl --addr ... update --version 3
//   weightcastctl --addr ... status [--json]
//   weightcastctl --addr ... abort
//   weightcastctl --group group.json update --version 3   (every sidecar at once)
//
// A group file names every sidecar of a group, sender rank = position:
//   {"sidecars": ["unix:/run/weightcast/rank0.sock",
//                 {"address": "unix:/run/weightcast/rank1.sock",
//                  "descriptors": "rank1.json"}]}     (or "checkpoint_dir")
// With --group the subcommand runs against all of them concurrently (init
// gets each one's --sender-rank and --num-senders), each line of output is
// prefixed "sender R:", and the exit code is the worst one.
//
// Exit codes (stable, for scripts): 0 success; 1 the daemon refused or the
// update failed; 2 bad usage or input file; 3 the daemon is unreachable.
#include <fcntl.h>
#include <algorithm>
#include <cstring>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "access/control_auth.h"
#include "access/control_listener.h"
#include "common/descriptor_json.h"
#include "common/secret.h"
#include "cmd/cli.h"
#include "weightcast/v1/control.grpc.pb.h"

namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kUnreachable = 3;

int Report(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return kOk;
  std::cerr << "weightcastctl " << what << ": " << s.error_message() << " (code "
            << s.error_code() << ")\n";
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) return kUnreachable;
  return kFailed;
}

// Reads a descriptor file (common/descriptor_json.h).
bool ReadDescriptors(const std::string& path, weightcast::v1::RegisterTensorsRequest* req,
                     std::string* error) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    *error = absl::StrCat(path, ": cannot open");
    return false;
  }
  absl::Status s = weightcast::ParseDescriptors(text.str(), path, req);
  if (!s.ok()) *error = std::string(s.message());
  return s.ok();
}

std::string Human(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  if (bytes >= (uint64_t{1} << 20)) return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  return absl::StrFormat("%d B", bytes);
}

// Per call: the control token, for a TCP daemon.
std::string g_bearer;
void Authorize(grpc::ClientContext& ctx) {
  if (!g_bearer.empty()) ctx.AddMetadata(weightcast::kControlAuthMetadataKey, g_bearer);
}

int RunUpdate(weightcast::v1::Broadcaster::Stub& stub, uint64_t version, double deadline_s,
              bool new_model) {
  grpc::ClientContext ctx;
  Authorize(ctx);
  // Every RPC is bounded; the daemon keeps running an update whose client
  // gave up (Abort cancels it).
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000)));
  weightcast::v1::UpdateRequest req;
  req.set_version(version);
  req.set_new_model(new_model);
  auto reader = stub.Update(&ctx, req);
  const bool tty = isatty(STDOUT_FILENO);
  weightcast::v1::UpdateEvent ev;
  int outcome = -1;
  while (reader->Read(&ev)) {
    switch (ev.event_case()) {
      case weightcast::v1::UpdateEvent::kPlanned:
        std::printf("planned version %llu: %u tensors, %s in %u buckets (%u from this sender)\n",
                    static_cast<unsigned long long>(version), ev.planned().num_tensors(),
                    Human(ev.planned().total_bytes()).c_str(), ev.planned().num_buckets(),
                    ev.planned().own_buckets());
        break;
      case weightcast::v1::UpdateEvent::kBucket: {
        const auto& b = ev.bucket();
        if (tty) {
          const int width = 30;
          const int done = static_cast<int>(width * (b.index() + 1) / std::max(1u, b.num_buckets()));
          std::printf("\r[%s%s] bucket %u/%u %s", std::string(done, '#').c_str(),
                      std::string(width - done, '.').c_str(), b.index() + 1, b.num_buckets(),
                      Human(b.bytes()).c_str());
          std::fflush(stdout);
        } else {
          std::printf("bucket %u/%u sent: %llu bytes\n", b.index() + 1, b.num_buckets(),
                      static_cast<unsigned long long>(b.bytes()));
        }
        break;
      }
      case weightcast::v1::UpdateEvent::kSourceReleased:
        if (!tty) std::printf("source released\n");
        break;
      case weightcast::v1::UpdateEvent::kCommitted: {
        const auto& c = ev.committed();
        std::printf("%scommitted version %llu: %s sent in %.3f s\n", tty ? "\n" : "",
                    static_cast<unsigned long long>(c.version()), Human(c.bytes()).c_str(),
                    c.seconds());
        outcome = kOk;
        break;
      }
      case weightcast::v1::UpdateEvent::kFailed:
        std::printf("%sfailed version %llu: %s (code %d)\n", tty ? "\n" : "",
                    static_cast<unsigned long long>(ev.failed().version()),
                    ev.failed().message().c_str(), ev.failed().code());
        // Committed by the group, not published everywhere: who holds what.
        for (const auto& r : ev.failed().receivers()) {
          std::printf("  rank %u holds version %llu%s%s\n", r.rank(),
                      static_cast<unsigned long long>(r.version()), r.error().empty() ? "" : ": ",
                      r.error().c_str());
        }
        outcome = kFailed;
        break;
      default:
        break;
    }
    std::fflush(stdout);
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Report(s, "update");
  return outcome == -1 ? kFailed : outcome;
}

struct GroupMember {
  std::string address;
  std::vector<std::string> extra;  // register: this sidecar's own source
};

bool ReadGroupFile(const std::string& path, std::vector<GroupMember>* out, std::string* error) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    *error = absl::StrCat(path, ": cannot open");
    return false;
  }
  const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("sidecars") ||
      !doc["sidecars"].is_array() || doc["sidecars"].empty()) {
    *error = absl::StrCat(path, ": expected {\"sidecars\": [ADDRESS or {\"address\": ...}, ...]}");
    return false;
  }
  for (const auto& e : doc["sidecars"]) {
    GroupMember m;
    if (e.is_string()) {
      m.address = e.get<std::string>();
    } else if (e.is_object() && e.contains("address") && e["address"].is_string()) {
      m.address = e["address"].get<std::string>();
      for (const char* key : {"descriptors", "checkpoint_dir"}) {
        if (!e.contains(key)) continue;
        if (!e[key].is_string()) {
          *error = absl::StrCat(path, ": sidecar ", out->size(), ": \"", key, "\" must be a path");
          return false;
        }
        m.extra = {key == std::string("descriptors") ? "--descriptors" : "--checkpoint-dir",
                   e[key].get<std::string>()};
      }
    } else {
      *error = absl::StrCat(path, ": sidecar ", out->size(), ": not an address");
      return false;
    }
    for (const GroupMember& o : *out) {
      if (o.address == m.address) {
        *error = absl::StrCat(path, ": ", m.address, " appears twice");
        return false;
      }
    }
    out->push_back(std::move(m));
  }
  return true;
}

// Runs this program once per sidecar (argv without --group, with --addr and,
// for init, the sender's rank), all at once; prints each one's output
// prefixed with its rank; returns the worst exit code.
int RunOnGroup(const std::vector<GroupMember>& group, const std::vector<std::string>& args,
               const std::string& subcommand) {
  struct Child {
    pid_t pid = -1;
    int out = -1;
    std::string text;
    int rc = 3;
  };
  std::vector<Child> children(group.size());
  for (size_t r = 0; r < group.size(); ++r) {
    std::vector<std::string> a = {"weightcastctl", "--addr", group[r].address};
    a.insert(a.end(), args.begin(), args.end());
    if (subcommand == "init") {
      a.insert(a.end(), {"--sender-rank", absl::StrCat(r)});
      if (std::find(args.begin(), args.end(), "--num-senders") == args.end()) {
        a.insert(a.end(), {"--num-senders", absl::StrCat(group.size())});
      }
    }
    if (subcommand == "register") a.insert(a.end(), group[r].extra.begin(), group[r].extra.end());
    std::vector<char*> cargv;
    for (std::string& s : a) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return 3;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    const int rc = posix_spawn(&children[r].pid, "/proc/self/exe", &actions, nullptr,
                               cargv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    children[r].out = fds[0];
    if (rc != 0) {
      children[r].pid = -1;
      children[r].text = absl::StrCat("cannot start: ", std::strerror(rc), "\n");
    }
  }
  std::vector<std::thread> readers;
  for (Child& c : children) {
    readers.emplace_back([&c] {
      char buf[4096];
      ssize_t n;
      while ((n = read(c.out, buf, sizeof(buf))) > 0) c.text.append(buf, static_cast<size_t>(n));
      close(c.out);
      int status = 0;
      if (c.pid > 0 && waitpid(c.pid, &status, 0) == c.pid && WIFEXITED(status)) {
        c.rc = WEXITSTATUS(status);
      }
    });
  }
  for (std::thread& t : readers) t.join();
  int worst = 0, ok = 0;
  for (size_t r = 0; r < children.size(); ++r) {
    std::istringstream lines(children[r].text);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line.find_first_not_of("\r") == std::string::npos) continue;
      std::printf("sender %zu (%s): %s\n", r, group[r].address.c_str(), line.c_str());
    }
    worst = std::max(worst, children[r].rc);
    ok += children[r].rc == 0;
  }
  std::printf("group: %s on %d of %zu sidecars\n", subcommand.c_str(), ok, children.size());
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"weightcastctl: control weightcastd sidecars"};
  app.require_subcommand(1);
  weightcast::AddStandardFlags(app, "weightcastctl");
  std::string addr = weightcast::DefaultControlAddress();
  double rpc_timeout = 30;
  std::string control_token_file, tls_ca;
  app.add_option("--addr", addr, "daemon address (unix:PATH or HOST:PORT)")->capture_default_str();
  app.add_option("--control-token-file", control_token_file,
                 "TCP: file holding the daemon's control token (default: "
                 "$WEIGHTCAST_CONTROL_TOKEN)");
  app.add_option("--tls-ca", tls_ca, "TCP: PEM certificate(s) to verify the daemon's TLS with");
  app.add_option("--rpc-timeout", rpc_timeout, "seconds for unary calls")->capture_default_str();
  std::string group_file;
  app.add_option("--group", group_file,
                 "a group file naming every sidecar: run the command on all of them");

  weightcast::v1::InitBroadcasterRequest init;
  std::string host = "127.0.0.1", transport = "gloo", family, layout, target, quant, rule,
              data_host;
  uint32_t port = 29501, sender_rank = 0, num_senders = 1, rank_offset = 0, world = 1;
  double timeout_s = 0;
  int32_t cuda_device = 0;
  uint64_t bucket_bytes = 0;
  bool pow2 = false;
  bool allow_non_finite = false;
  auto* c_init = app.add_subcommand("init", "join the sidecar to a group (InitBroadcaster)");
  c_init->add_option("--host", host, "rendezvous host")->capture_default_str();
  c_init->add_option("--port", port, "rendezvous port")->capture_default_str();
  c_init->add_option("--sender-rank", sender_rank, "this sidecar's place among the senders (0 leads)")
      ->capture_default_str();
  c_init->add_option("--num-senders", num_senders, "trainer ranks that send (one sidecar each)")
      ->capture_default_str();
  c_init->add_option("--first-inference-rank,--rank-offset", rank_offset,
                     "group rank of the first receiver (0: num-senders); --rank-offset is the "
                     "old spelling");
  c_init->add_option("--inference-world-size", world, "receiver ranks in the group")
      ->capture_default_str();
  c_init->add_option("--timeout", timeout_s, "seconds per collective (0: default)");
  c_init->add_option("--transport", transport, "gloo (host memory) | nccl (GPU)")
      ->capture_default_str();
  c_init->add_option("--family", family, "model family (default: config.json model_type)");
  c_init->add_option("--source-layout", layout, "per-expert | fused | stacked");
  c_init->add_option("--target", target, "hf | hf-fused");
  c_init->add_option("--quantization", quant, "none | fp8-block");
  c_init->add_option("--scale-rule", rule, "amax-clamp | scale-clamp");
  c_init->add_flag("--pow2-scales", pow2, "power-of-two (UE8M0) FP8 scales");
  c_init->add_option("--bucket-bytes", bucket_bytes, "largest bucket (0: default)");
  std::string token_file;
  c_init->add_option("--token-file", token_file,
                     "file holding the group token (default: $WEIGHTCAST_TOKEN)");
  c_init->add_option("--data-host", data_host, "data-plane bind address");
  c_init->add_option("--cuda-device", cuda_device, "GPU of the data plane (nccl)");
  c_init->add_flag("--allow-non-finite", allow_non_finite,
                   "send NaN/inf weights as they are (default: refuse the version, naming the "
                   "tensor and element)");

  std::string descriptors, checkpoint_dir;
  bool replace = false;
  auto* c_reg = app.add_subcommand("register", "tell the sidecar where its tensors are (RegisterTensors)");
  c_reg->add_option("--descriptors", descriptors, "JSON descriptor file");
  c_reg->add_option("--checkpoint-dir", checkpoint_dir, "safetensors checkpoint directory");
  c_reg->add_flag("--replace", replace, "drop previously registered tensors");

  uint64_t version = 0;
  double update_deadline = 3600;
  auto* c_upd = app.add_subcommand("update", "send a new version and follow it to its end (Update)");
  // Read as text: CLI11 would wrap "-1" to 2^64-1.
  c_upd->add_option_function<std::string>(
           "--version",
           [&version](const std::string& v) {
             if (!absl::SimpleAtoi(v, &version) || v.empty() || v[0] == '-' || v[0] == '+' ||
                 version == 0) {
               throw CLI::ValidationError("--version", "'" + v + "' is not a positive integer");
             }
           },
           "weight version (1, 2, ...: increasing)")
      ->required();
  bool new_model = false;
  c_upd->add_flag("--new-model", new_model,
                  "this version may change the tensor set (on sender 0; otherwise receivers "
                  "refuse a version whose tensors differ from the committed model's)");
  c_upd->add_option("--deadline", update_deadline, "seconds for the whole update")
      ->capture_default_str();

  bool json = false;
  auto* c_status = app.add_subcommand("status", "show the sidecar's state and what each receiver holds (GetStatus)");
  c_status->add_flag("--json", json, "one JSON object instead of text");
  auto* c_abort = app.add_subcommand("abort", "cancel a running update and leave the group (Abort)");

  if (std::optional<int> rc = weightcast::ParseCommandLine(app, argc, argv)) return *rc;
  if (!group_file.empty()) {
    std::vector<GroupMember> group;
    std::string error;
    if (!ReadGroupFile(group_file, &group, &error)) {
      std::fprintf(stderr, "weightcastctl --group: %s\n", error.c_str());
      return kUsage;
    }
    const std::string subcommand = app.get_subcommands().front()->get_name();
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--group" || a == "--addr") {
        ++i;
        continue;
      }
      if (a.starts_with("--group=") || a.starts_with("--addr=")) continue;
      if (a == "--sender-rank" || a.starts_with("--sender-rank=")) {
        std::fprintf(stderr, "weightcastctl --group: each sidecar's rank is its place in %s\n",
                     group_file.c_str());
        return kUsage;
      }
      args.push_back(a);
    }
    return RunOnGroup(group, args, subcommand);
  }

  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!addr.starts_with("unix:")) {
    absl::StatusOr<std::string> t =
        weightcast::ReadToken(control_token_file, weightcast::kControlTokenEnv);
    if (!t.ok()) {
      std::fprintf(stderr, "weightcastctl: %s\n", std::string(t.status().message()).c_str());
      return kUsage;
    }
    if (!t->empty()) g_bearer = absl::StrCat(weightcast::kBearerPrefix, *t);
    if (!tls_ca.empty()) {
      std::ifstream in(tls_ca);
      std::stringstream pem;
      pem << in.rdbuf();
      if (!in || pem.str().empty()) {
        std::fprintf(stderr, "weightcastctl: --tls-ca %s: cannot read\n", tls_ca.c_str());
        return kUsage;
      }
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = pem.str();
      creds = grpc::SslCredentials(ssl);
    }
  }
  auto channel = grpc::CreateChannel(addr, creds);
  auto stub = weightcast::v1::Broadcaster::NewStub(channel);
  auto unary_ctx = [&](grpc::ClientContext& ctx) {
    Authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(rpc_timeout * 1000)));
  };

  if (*c_init) {
    init.set_host(host);
    init.set_port(port);
    init.set_sender_rank(sender_rank);
    init.set_num_senders(num_senders);
    init.set_rank_offset(rank_offset);
    init.set_inference_world_size(world);
    init.set_timeout_s(timeout_s);
    init.set_transport(transport);
    init.mutable_format()->set_family(family);
    init.mutable_format()->set_source_layout(layout);
    init.mutable_format()->set_target(target);
    init.mutable_format()->mutable_quantization()->set_method(quant);
    init.mutable_format()->mutable_quantization()->set_scale_rule(rule);
    init.mutable_format()->mutable_quantization()->set_power_of_two_scales(pow2);
    init.set_bucket_bytes(bucket_bytes);
    absl::StatusOr<std::string> token = weightcast::ReadToken(token_file);
    if (!token.ok()) {
      std::fprintf(stderr, "weightcastctl init: %s\n",
                   std::string(token.status().message()).c_str());
      return kUsage;
    }
    if (token->empty()) {
      std::fprintf(stderr, "weightcastctl init: a group token is required (--token-file or "
                           "$WEIGHTCAST_TOKEN)\n");
      return kUsage;
    }
    init.set_token(*token);
    init.set_data_host(data_host);
    init.set_cuda_device(cuda_device);
    init.set_allow_non_finite(allow_non_finite);
    grpc::ClientContext ctx;
    unary_ctx(ctx);
    weightcast::v1::InitBroadcasterResponse resp;
    grpc::Status s = stub->InitBroadcaster(&ctx, init, &resp);
    if (s.ok()) std::printf("initialized: rank %u of world %u\n", resp.rank(), resp.world_size());
    return Report(s, "init");
  }
  if (*c_reg) {
    weightcast::v1::RegisterTensorsRequest req;
    if (descriptors.empty() == checkpoint_dir.empty()) {
      std::cerr << "weightcastctl register: give exactly one of --descriptors, --checkpoint-dir\n";
      return kUsage;
    }
    std::string error;
    if (!descriptors.empty() && !ReadDescriptors(descriptors, &req, &error)) {
      std::cerr << "weightcastctl register: " << error << "\n";
      return kUsage;
    }
    req.set_checkpoint_dir(checkpoint_dir);
    req.set_replace(replace);
    grpc::ClientContext ctx;
    unary_ctx(ctx);
    weightcast::v1::RegisterTensorsResponse resp;
    grpc::Status s = stub->RegisterTensors(&ctx, req, &resp);
    if (s.ok()) {
      std::printf("registered: %u tensors, %s\n", resp.registered(),
                  Human(resp.total_bytes()).c_str());
    }
    return Report(s, "register");
  }
  if (*c_upd) {
    if (update_deadline <= 0) {
      std::cerr << "weightcastctl update: --deadline must be positive\n";
      return kUsage;
    }
    return RunUpdate(*stub, version, update_deadline, new_model);
  }
  if (*c_status) {
    grpc::ClientContext ctx;
    unary_ctx(ctx);
    weightcast::v1::GetStatusResponse r;
    grpc::Status s = stub->GetStatus(&ctx, {}, &r);
    if (!s.ok()) return Report(s, "status");
    if (json) {
      nlohmann::json j = {{"state", r.state()},
                          {"last_committed_version", r.last_committed_version()},
                          {"last_error", r.last_error()},
                          {"updates_committed", r.updates_committed()},
                          {"updates_failed", r.updates_failed()},
                          {"bytes_sent", r.bytes_sent()},
                          {"registered_tensors", r.registered_tensors()},
                          {"rank", r.rank()},
                          {"world_size", r.world_size()},
                          {"generation", r.generation()},
                          {"device_memory_bytes", r.device_memory_bytes()},
                          {"device_memory_peak_bytes", r.device_memory_peak_bytes()},
                          {"pinned_memory_peak_bytes", r.pinned_memory_peak_bytes()},
                          {"receivers", nlohmann::json::array()}};
      for (const auto& v : r.receivers()) {
        j["receivers"].push_back(
            {{"rank", v.rank()}, {"version", v.version()}, {"error", v.error()}});
      }
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("state %s, rank %u of %u, generation %llu, last committed %llu, %llu ok / %llu "
                  "failed, %s sent, %u tensors registered%s%s\n",
                  r.state().c_str(), r.rank(), r.world_size(),
                  static_cast<unsigned long long>(r.generation()),
                  static_cast<unsigned long long>(r.last_committed_version()),
                  static_cast<unsigned long long>(r.updates_committed()),
                  static_cast<unsigned long long>(r.updates_failed()),
                  Human(r.bytes_sent()).c_str(), r.registered_tensors(),
                  r.last_error().empty() ? "" : ", last error: ", r.last_error().c_str());
      if (r.device_memory_peak_bytes() > 0 || r.pinned_memory_peak_bytes() > 0) {
        std::printf("  GPU memory %s (peak %s), pinned host peak %s\n",
                    Human(r.device_memory_bytes()).c_str(),
                    Human(r.device_memory_peak_bytes()).c_str(),
                    Human(r.pinned_memory_peak_bytes()).c_str());
      }
      for (const auto& v : r.receivers()) {
        std::printf("  receiver rank %u publishes version %llu%s%s\n", v.rank(),
                    static_cast<unsigned long long>(v.version()), v.error().empty() ? "" : ": ",
                    v.error().c_str());
      }
    }
    return kOk;
  }
  if (*c_abort) {
    grpc::ClientContext ctx;
    unary_ctx(ctx);
    weightcast::v1::AbortResponse r;
    grpc::Status s = stub->Abort(&ctx, {}, &r);
    if (s.ok()) std::printf(r.aborted_update() ? "aborted a running update\n" : "aborted\n");
    return Report(s, "abort");
  }
  return kUsage;
}

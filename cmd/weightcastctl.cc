// weightcastctl: drives weightcastd daemons from scripts and terminals.
//
//   weightcastctl --addr unix:/tmp/wc0.sock init --host 127.0.0.1 --port 29501 ...
//   weightcastctl --addr ... register --descriptors tensors.json | --checkpoint-dir DIR
//   weightcastctl --addr ... update --version 3
//   weightcastctl --addr ... status [--json]
//   weightcastctl --addr ... abort
//
// Exit codes (stable, for scripts): 0 success; 1 the daemon refused or the
// update failed; 2 bad usage or input file; 3 the daemon is unreachable.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/secret.h"
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

// Reads a descriptor file:
//   {"config": {...config.json...},            (optional)
//    "tensors": [{"name": "...", "dtype": "BF16", "shape": [2, 3],
//                 "shm": {"path": "/dev/shm/x", "offset": 0}}, ...]}
bool ReadDescriptors(const std::string& path, weightcast::v1::RegisterTensorsRequest* req,
                     std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = absl::StrCat(path, ": cannot open");
    return false;
  }
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    *error = absl::StrCat(path, ": not JSON: ", e.what());
    return false;
  }
  if (!doc.is_object() || !doc.contains("tensors") || !doc["tensors"].is_array()) {
    *error = absl::StrCat(path, ": expected an object with a \"tensors\" array");
    return false;
  }
  if (doc.contains("config")) {
    if (!doc["config"].is_object()) {
      *error = absl::StrCat(path, ": \"config\" must be an object (the model's config.json)");
      return false;
    }
    req->set_config_json(doc["config"].dump());
  }
  size_t i = 0;
  for (const auto& t : doc["tensors"]) {
    const std::string where = absl::StrCat(path, ": tensors[", i++, "]");
    try {
      auto* d = req->add_tensors();
      d->set_name(t.at("name").get<std::string>());
      d->set_dtype(t.at("dtype").get<std::string>());
      for (const auto& dim : t.at("shape")) {
        if (!dim.is_number_integer()) throw std::runtime_error("shape: dimensions must be integers");
        d->add_shape(dim.get<int64_t>());
      }
      if (t.contains("shm")) {
        d->mutable_shm()->set_path(t["shm"].at("path").get<std::string>());
        d->mutable_shm()->set_offset(t["shm"].value("offset", uint64_t{0}));
      } else if (t.contains("cuda_ipc")) {
        const auto& c = t["cuda_ipc"];
        // proto3 JSON spells bytes in base64, as the Python trainer helper
        // (weightcast_trainer.cuda_ipc.descriptors_document) writes them.
        const std::string b64 = c.at("ipc_handle").get<std::string>();
        std::string raw;
        if (!absl::Base64Unescape(b64, &raw)) {
          throw std::runtime_error("ipc_handle: not base64");
        }
        d->mutable_cuda_ipc()->set_ipc_handle(raw);
        d->mutable_cuda_ipc()->set_offset(c.value("offset", uint64_t{0}));
        d->mutable_cuda_ipc()->set_device(c.value("device", 0));
        d->mutable_cuda_ipc()->set_allocation_bytes(c.value("allocation_bytes", uint64_t{0}));
      } else {
        throw std::runtime_error("no location: needs \"shm\" or \"cuda_ipc\"");
      }
    } catch (const std::exception& e) {
      *error = absl::StrCat(where, ": ", e.what());
      return false;
    }
  }
  return true;
}

std::string Human(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  if (bytes >= (uint64_t{1} << 20)) return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  return absl::StrFormat("%d B", bytes);
}

int RunUpdate(weightcast::v1::Broadcaster::Stub& stub, uint64_t version, double deadline_s,
              bool new_model) {
  grpc::ClientContext ctx;
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"weightcastctl: control weightcastd sidecars"};
  app.require_subcommand(1);
  std::string addr = "127.0.0.1:50151";
  double rpc_timeout = 30;
  app.add_option("--addr", addr, "daemon address (unix:PATH or HOST:PORT)")->capture_default_str();
  app.add_option("--rpc-timeout", rpc_timeout, "seconds for unary calls")->capture_default_str();

  weightcast::v1::InitBroadcasterRequest init;
  std::string host = "127.0.0.1", transport = "gloo", family, layout, target, quant, rule, token,
              data_host;
  uint32_t port = 29501, sender_rank = 0, num_senders = 1, rank_offset = 0, world = 1;
  double timeout_s = 0;
  int32_t cuda_device = 0;
  uint64_t bucket_bytes = 0;
  bool pow2 = false;
  bool allow_non_finite = false;
  auto* c_init = app.add_subcommand("init", "InitBroadcaster");
  c_init->add_option("--host", host, "rendezvous host")->capture_default_str();
  c_init->add_option("--port", port, "rendezvous port")->capture_default_str();
  c_init->add_option("--sender-rank", sender_rank)->capture_default_str();
  c_init->add_option("--num-senders", num_senders)->capture_default_str();
  c_init->add_option("--rank-offset", rank_offset, "first inference rank (0: num-senders)");
  c_init->add_option("--inference-world-size", world)->capture_default_str();
  c_init->add_option("--timeout", timeout_s, "seconds per collective (0: default)");
  c_init->add_option("--transport", transport)->capture_default_str();
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
  c_init->add_option("--token", token, "group token (visible in ps: prefer --token-file)");
  c_init->add_option("--data-host", data_host, "data-plane bind address");
  c_init->add_option("--cuda-device", cuda_device, "GPU of the data plane (nccl)");
  c_init->add_flag("--allow-non-finite", allow_non_finite,
                   "send NaN/inf weights as they are (default: refuse the version, naming the "
                   "tensor and element)");

  std::string descriptors, checkpoint_dir;
  bool replace = false;
  auto* c_reg = app.add_subcommand("register", "RegisterTensors");
  c_reg->add_option("--descriptors", descriptors, "JSON descriptor file");
  c_reg->add_option("--checkpoint-dir", checkpoint_dir, "safetensors checkpoint directory");
  c_reg->add_flag("--replace", replace, "drop previously registered tensors");

  uint64_t version = 0;
  double update_deadline = 3600;
  auto* c_upd = app.add_subcommand("update", "Update and follow its progress");
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
  auto* c_status = app.add_subcommand("status", "GetStatus");
  c_status->add_flag("--json", json);
  auto* c_abort = app.add_subcommand("abort", "Abort");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = weightcast::v1::Broadcaster::NewStub(channel);
  auto unary_ctx = [&](grpc::ClientContext& ctx) {
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
    if (!token.empty() && !token_file.empty()) {
      std::fprintf(stderr, "weightcastctl init: --token and --token-file are exclusive\n");
      return kUsage;
    }
    if (token.empty()) {
      absl::StatusOr<std::string> t = weightcast::ReadToken(token_file);
      if (!t.ok()) {
        std::fprintf(stderr, "weightcastctl init: %s\n", std::string(t.status().message()).c_str());
        return kUsage;
      }
      token = *t;
    }
    init.set_token(token);
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

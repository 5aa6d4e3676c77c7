#include "sender/broadcaster.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/device_memory.h"
#include "protocol/bucket_plan.h"
#include "protocol/rendezvous_store.h"
#include "kernels/cuda_ipc.h"
#include "sender/cuda_bucket_packer.h"
#include "sender/update_pipeline.h"
#include "sender/wire_tensors.h"
#include "transport/rendezvous.h"

namespace weightcast {
namespace {

// After packing: every source file is still the one mapped, at its size, no
// read of it faulted, and its modification time did not move since `stamps`.
absl::Status SourcesIntact(const RegistrySnapshot& snap, const std::vector<int64_t>& stamps) {
  for (size_t i = 0; i < snap.files.size(); ++i) {
    const MappedFile& f = *snap.files[i];
    RETURN_IF_ERROR(f.CheckUnchanged());
    ASSIGN_OR_RETURN(int64_t t, f.ModifiedNs());
    if (t != stamps[i]) {
      return absl::FailedPreconditionError(absl::StrCat(
          f.path(), ": written while this update read it (the trainer may write again "
                    "only after SourceReleased); what was sent may mix two steps"));
    }
  }
  return absl::OkStatus();
}

constexpr uint32_t kMaxWorldSize = 1 << 16;
// Versions are 1 .. 2^63-1: anything above is a negative number gone
// unsigned, and would make every later version look stale to receivers.
constexpr uint64_t kMaxVersion = (uint64_t{1} << 63) - 1;

absl::Status ValidateConfig(const BroadcasterConfig& c) {
  if (c.host.empty()) return absl::InvalidArgumentError("host: empty");
  if (c.token.empty()) {
    return absl::InvalidArgumentError(
        "token: a group token is required (every rank of the group proves it knows it)");
  }
  if (c.port == 0 && c.sender_rank != 0) {
    return absl::InvalidArgumentError("port: 0 is only allowed on sender rank 0 (pick a free port)");
  }
  if (c.port > 65535) return absl::InvalidArgumentError(absl::StrCat("port: ", c.port, " > 65535"));
  if (c.num_senders == 0) return absl::InvalidArgumentError("num_senders: must be at least 1");
  if (c.sender_rank >= c.num_senders) {
    return absl::InvalidArgumentError(absl::StrCat("sender_rank: ", c.sender_rank,
                                                   " not below num_senders ", c.num_senders));
  }
  if (c.inference_world_size == 0) {
    return absl::InvalidArgumentError("inference_world_size: must be at least 1");
  }
  if (c.rank_offset != 0 && c.rank_offset != c.num_senders) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank_offset: inference ranks start right after the ", c.num_senders,
        " sender(s), so it must be ", c.num_senders, " (or 0), not ", c.rank_offset));
  }
  if (static_cast<uint64_t>(c.num_senders) + c.inference_world_size > kMaxWorldSize) {
    return absl::InvalidArgumentError("world size too large");
  }
  if (!(c.timeout_s >= 0 && c.timeout_s <= 86400)) {  // NaN too
    return absl::InvalidArgumentError(absl::StrCat("timeout_s: ", c.timeout_s,
                                                   " outside [0, 86400]"));
  }
  if (c.transport != "gloo" && c.transport != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("transport: '", c.transport, "' (expected gloo or nccl)"));
  }
  if (c.cuda_device < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cuda_device: ", c.cuda_device, " < 0"));
  }
  if (c.bucket_bytes != 0 &&
      (c.bucket_bytes < kMinBucketBytes || c.bucket_bytes > kMaxBucketBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("bucket_bytes: ", c.bucket_bytes,
                                                   " outside [", kMinBucketBytes, ", ",
                                                   kMaxBucketBytes, "]"));
  }
  return absl::OkStatus();
}

BroadcasterConfig WithDefaults(BroadcasterConfig c) {
  if (c.rank_offset == 0) c.rank_offset = c.num_senders;
  if (c.timeout_s == 0) c.timeout_s = kDefaultTimeoutSeconds;
  if (c.bucket_bytes == 0) c.bucket_bytes = kDefaultBucketBytes;
  if (c.transport.empty()) c.transport = "gloo";
  if (c.data_host.empty()) c.data_host = "127.0.0.1";
  return c;
}

}  // namespace

absl::Status ValidateBroadcasterConfig(const BroadcasterConfig& raw) {
  BroadcasterConfig config = raw;
  if (config.transport.empty()) config.transport = "gloo";
  RETURN_IF_ERROR(ValidateConfig(config));
  return ParseFormatOptions(WithDefaults(config).format).status();
}

Broadcaster::Broadcaster() { stats_.state = "uninitialized"; }

Broadcaster::~Broadcaster() {
  Abort();
}

absl::StatusOr<std::pair<uint32_t, uint32_t>> Broadcaster::Init(const BroadcasterConfig& raw) {
  BroadcasterConfig config = raw;
  if (config.transport.empty()) config.transport = "gloo";
  RETURN_IF_ERROR(ValidateConfig(config));
  config = WithDefaults(config);
  ASSIGN_OR_RETURN(FormatSpec format, ParseFormatOptions(config.format));
  absl::MutexLock lock(&mu_);
  const uint32_t world = config.num_senders + config.inference_world_size;
  if (initialized_) {
    BroadcasterConfig current = config_;
    // Port 0 on rank 0 means "any": the same request again still matches.
    if (raw.port == 0 && config.sender_rank == 0) config.port = current.port;
    if (config == current) return std::make_pair(config.sender_rank, world);
    return absl::FailedPreconditionError(
        "already initialized with a different configuration; Abort first to re-initialize");
  }
  std::shared_ptr<RendezvousServer> server;
  if (config.sender_rank == 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<RendezvousServer> s,
                     RendezvousServer::Start(config.host, config.port, config.token));
    config.port = s->bound_port();
    RETURN_IF_ERROR(s->store().Set(kIncarnationKey, absl::StrCat(absl::ToUnixNanos(absl::Now()))));
    server = std::move(s);
  }
  const std::string address = absl::StrCat(config.host, ":", config.port);
  auto store = std::make_shared<RendezvousKeyValueStore>(address, config.token,
                                                         absl::Seconds(config.timeout_s));
  auto member = std::make_shared<GroupMember>(
      store.get(), MakeTransportFactory({.rendezvous_address = address, .token = config.token, .bind_host = config.data_host, .cuda_device = config.cuda_device}),
      static_cast<int>(config.sender_rank));
  if (config.sender_rank != 0) {
    // Fail early (and clearly) when the rendezvous is unreachable.
    absl::Status reach = store->Wait({}, absl::Now() + absl::Seconds(config.timeout_s));
    if (!reach.ok()) {
      return absl::UnavailableError(absl::StrCat("rendezvous at ", address, ": ", reach.message()));
    }
    RETURN_IF_ERROR(MarkEarlierProcessGone(*store, static_cast<int>(config.sender_rank)));
  }
  config_ = config;
  format_ = format;
  server_ = std::move(server);
  store_ = std::move(store);
  member_ = std::move(member);
  ASSIGN_OR_RETURN(last_seq_, LastAnnouncedSeq(*store_));
  absl::StatusOr<std::string> incarnation = store_->Get(kIncarnationKey);
  incarnation_ = incarnation.ok() ? *incarnation : "";
  initialized_ = true;
  stats_.group_broken = false;
  stats_.state = "idle";
  stats_.rank = config.sender_rank;
  stats_.world_size = world;
  return std::make_pair(config.sender_rank, world);
}

absl::Status Broadcaster::Register(const std::vector<TensorRegistration>& tensors,
                                   const std::string& checkpoint_dir, bool replace,
                                   const std::string& config_json,
                                   const ReadCheck& may_read) {
  absl::MutexLock lock(&mu_);
  if (updating_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot register while version ", updating_version_, " is being broadcast"));
  }
  if (tensors.empty() && checkpoint_dir.empty() && config_json.empty()) {
    return absl::InvalidArgumentError(
        "nothing to register: no tensors, checkpoint_dir or config_json");
  }
  // Validate into a copy so a failure keeps the registry as it was.
  TensorRegistry next = registry_;
  if (!checkpoint_dir.empty()) RETURN_IF_ERROR(next.AddCheckpointDir(checkpoint_dir, replace, may_read));
  if (!tensors.empty()) {
    RETURN_IF_ERROR(next.Add(tensors, replace && checkpoint_dir.empty(), may_read));
  }
  if (!config_json.empty()) RETURN_IF_ERROR(next.SetConfigJson(config_json));
  registry_ = std::move(next);
  stats_.registered_tensors = static_cast<uint32_t>(registry_.size());
  return absl::OkStatus();
}

std::pair<uint32_t, uint64_t> Broadcaster::RegisteredCount() const {
  absl::MutexLock lock(&mu_);
  return {static_cast<uint32_t>(registry_.size()), registry_.total_bytes()};
}

absl::Status Broadcaster::Update(uint64_t version, const UpdateEventSink& on_event,
                                 bool new_model) {
  UpdateObserver observer;
  UpdateContext context;
  {
    absl::MutexLock lock(&mu_);
    if (!initialized_) {
      return absl::FailedPreconditionError("Update before InitBroadcaster");
    }
    if (updating_) {
      return absl::FailedPreconditionError(
          absl::StrCat("version ", updating_version_, " is still being broadcast"));
    }
    if (version > kMaxVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version ", version, " exceeds the largest version ", kMaxVersion,
          " (a negative number read as unsigned?)"));
    }
    if (registry_.size() == 0) {
      // What a sidecar restarted and initialised without registering does:
      // its part of the model would silently be missing from the version.
      return absl::FailedPreconditionError(absl::StrCat(
          "sender ", config_.sender_rank, " has no tensors registered: register them "
          "(again, after a restart) before an update"));
    }
    if (version == 0 || version <= stats_.last_committed_version) {
      return absl::FailedPreconditionError(absl::StrCat(
          "version ", version, " does not increase (last committed: ",
          stats_.last_committed_version, ")"));
    }
    updating_ = true;
    updating_version_ = version;
    stats_.state = "updating";
    observer = observer_;
    context = UpdateContext{.version = version, .sender_rank = config_.sender_rank,
                            .started = absl::Now()};
  }
  const UpdateEventSink emit = [&](const UpdateEvent& e) {
    on_event(e);
    if (observer) observer(context, e);
  };
  const absl::Time start = absl::Now();
  uint64_t sent = 0;
  std::vector<RankVersion> receivers;
  bool committed = false;
  absl::Status status = [&] {
    absl::StatusOr<UpdateSummary> s = [&]() -> absl::StatusOr<UpdateSummary> {
      // Snapshot everything the update needs under the lock, then run
      // without it so Abort and GetStatus stay responsive.
      BroadcasterConfig config;
      FormatSpec format;
      RegistrySnapshot snap;
      std::shared_ptr<KeyValueStore> store;
      std::shared_ptr<GroupMember> member;
      uint64_t last_seq;
      {
        absl::MutexLock lock(&mu_);
        config = config_;
        format = format_;
        ASSIGN_OR_RETURN(snap, registry_.Snapshot());
        store = store_;
        member = member_;
        last_seq = last_seq_;
      }
      ASSIGN_OR_RETURN(DataPlane plane, PrepareDataPlane(config, snap));
      // Modification times before anything is read (the snapshot checked
      // identity and size): the contract is that the trainer does not write
      // its files between Update and SourceReleased.
      std::vector<int64_t> stamps;
      for (const auto& f : snap.files) {
        ASSIGN_OR_RETURN(int64_t t, f->ModifiedNs());
        stamps.push_back(t);
      }
      std::vector<TensorSpec> specs;
      for (const HostSource& h : snap.sources) specs.push_back(h.spec);
      ASSIGN_OR_RETURN(WireTensors wire, BuildWireTensors(format, specs, snap.config_json));
      ASSIGN_OR_RETURN(BucketPlan plan, PlanBuckets(wire.outputs, config.bucket_bytes, 0));
      const absl::Duration timeout = absl::Seconds(config.timeout_s);
      const uint32_t world = config.num_senders + config.inference_world_size;
      // Finding the announcement, incarnation check included, takes one
      // timeout at most.
      const absl::Time announced_by = absl::Now() + timeout;
      if (config.sender_rank != 0) {
        // Sender 0 restarted (or was re-initialised) since: its numbering
        // started again, so every announcement of it is new to this sender.
        absl::StatusOr<std::string> incarnation = store->Get(kIncarnationKey, announced_by);
        absl::MutexLock lock(&mu_);
        if (incarnation.ok() && *incarnation != incarnation_) {
          incarnation_ = *incarnation;
          last_seq = 0;
        }
      }
      absl::StatusOr<Announcement> a =
          config.sender_rank == 0
              ? AnnounceUpdate(*member, version, config.num_senders, world, config.transport,
                               new_model)
              : AwaitUpdate(*store, version, last_seq, announced_by);
      if (!a.ok()) return a.status();
      // However this update ends, sender 0 records that it ended, so a
      // receiver starting later does not try to join it.
      struct DoneMarker {
        KeyValueStore* store;
        uint64_t seq;
        ~DoneMarker() {
          if (store != nullptr) (void)store->Set(DoneKey(seq), "ended");
        }
      } done{config.sender_rank == 0 ? store.get() : nullptr, a->seq};
      {
        absl::MutexLock lock(&mu_);
        last_seq_ = a->seq;
        stats_.generation = a->generation;
      }
      // Another rank's failure or planned stop ends this update promptly,
      // joining included.
      BrokenWatch watch(*member, a->generation);
      ASSIGN_OR_RETURN(Transport * transport,
                       member->Join(*a, absl::Now() + timeout));
      if (observer) observer(context, JoinedEvent{.seq = a->seq, .generation = a->generation});
      SenderUpdate u{.weight_version = version,
                     .seq = a->seq,
                     .num_senders = config.num_senders,
                     .outputs = wire.outputs,
                     .sources = snap.sources,
                     .source_on_device = plane.on_device,
                     .packer = plane.packer,
                     .plan = &plan,
                     .config_json = config.sender_rank == 0 ? wire.config_json : "",
                     .check_finite = !config.allow_non_finite,
                     .op_timeout = timeout,
                     .store = store.get(),
                     .sources_intact = [&snap, &stamps] { return SourcesIntact(snap, stamps); }};
      absl::StatusOr<UpdateSummary> r = RunSenderUpdate(*transport, u, emit);
      if (!r.ok() && !transport->healthy()) member->MarkBroken(r.status());
      return r;
    }();
    if (!s.ok()) return s.status();
    sent = s->bytes_sent;
    receivers = s->receivers;
    committed = true;
    return s->published;
  }();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::MutexLock lock(&mu_);
  updating_ = false;
  if (committed) {
    // The group voted for it: the next update must be a newer version even
    // when a receiver failed to publish this one (it catches up then).
    stats_.last_committed_version = version;
    stats_.updates_committed++;
    stats_.bytes_sent += sent;
  }
  if (committed) stats_.group_broken = false;
  if (status.ok()) {
    emit(CommittedEvent{
        .version = version, .bytes = sent, .seconds = seconds, .receivers = receivers});
  } else if (committed) {
    stats_.last_error = std::string(status.message());
    emit(FailedEvent{.version = version, .status = status, .receivers = receivers});
  } else {
    stats_.group_broken = absl::IsUnavailable(status) || absl::IsAborted(status) ||
                          absl::IsDeadlineExceeded(status);
    if (!initialized_ && !absl::IsAborted(status)) {
      status = absl::AbortedError(absl::StrCat("update aborted: ", status.message()));
    }
    stats_.updates_failed++;
    stats_.last_error = std::string(status.message());
    emit(FailedEvent{.version = version, .status = status});
  }
  stats_.state = initialized_ ? "idle" : "uninitialized";
  return status;
}

absl::StatusOr<Broadcaster::DataPlane> Broadcaster::PrepareDataPlane(
    const BroadcasterConfig& config, RegistrySnapshot& snap) {
  DataPlane plane;
  plane.on_device.assign(snap.sources.size(), 0);
  if (config.transport != "nccl") {
    if (!snap.device_sources.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor '", snap.sources[snap.device_sources.front().index].spec.name,
          "' is in GPU memory (CUDA IPC), and the ", config.transport,
          " transport moves host memory: initialize with transport nccl"));
    }
    return plane;
  }
  // Made on the first GPU update and kept: staging memory is allocated once
  // and CUDA IPC allocations stay open across updates.
  if (gpu_packer_ == nullptr || gpu_device_ != config.cuda_device) {
    gpu_packer_.reset();
    ipc_.reset();
    absl::StatusOr<std::unique_ptr<BucketPacker>> p = NewCudaBucketPacker(config.cuda_device);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrCat("sender ", config.sender_rank,
                                       ": the nccl transport needs a usable GPU: ",
                                       p.status().message()));
    }
    gpu_packer_ = *std::move(p);
    gpu_device_ = config.cuda_device;
  }
  plane.packer = gpu_packer_.get();
  if (ipc_ == nullptr) ipc_ = std::make_unique<IpcAllocationCache>(config.cuda_device);
  absl::flat_hash_set<std::string> names;
  for (const DeviceSourceRef& ref : snap.device_sources) {
    HostSource& src = snap.sources[ref.index];
    if (ref.location.device != config.cuda_device) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor '", src.spec.name, "': registered on CUDA device ", ref.location.device,
          ", this daemon's data plane is on device ", config.cuda_device));
    }
    ASSIGN_OR_RETURN(void* p, ipc_->Resolve(src.spec.name, ref.location.ipc_handle,
                                            ref.location.allocation_bytes, ref.location.offset,
                                            src.spec.ByteSize()));
    src.data = static_cast<const std::byte*>(p);
    plane.on_device[ref.index] = 1;
    names.insert(src.spec.name);
  }
  // Tensors no longer registered let go of their allocations.
  ipc_->RetainOnly(names);
  return plane;
}

std::string NotServingReason(const BroadcasterStatus& status) {
  if (status.state == "uninitialized") return "not initialized (InitBroadcaster)";
  if (status.group_broken) return absl::StrCat("group broken: ", status.last_error);
  return "";
}

void Broadcaster::SetObserver(UpdateObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

BroadcasterStatus Broadcaster::GetStatus() const {
  std::shared_ptr<KeyValueStore> store;
  int first = 0, end = 0;
  BroadcasterStatus s;
  {
    absl::MutexLock lock(&mu_);
    s = stats_;
    s.registered_tensors = static_cast<uint32_t>(registry_.size());
    if (initialized_) {
      store = store_;
      first = static_cast<int>(config_.num_senders);
      end = first + static_cast<int>(config_.inference_world_size);
    }
  }
  // Outside the lock, bounded: status answers while the rendezvous is slow.
  if (store != nullptr) {
    s.receivers = PublishedVersions(*store, first, end, absl::Now() + absl::Seconds(1));
  }
  const DeviceMemoryUse memory = CurrentDeviceMemoryUse();
  s.device_memory_bytes = memory.device_bytes;
  s.device_memory_peak_bytes = memory.device_peak_bytes;
  s.pinned_memory_peak_bytes = memory.pinned_peak_bytes;
  return s;
}

void Broadcaster::Teardown() {
  initialized_ = false;
  if (member_) member_->AbortTransport();
  if (store_) store_->Cancel();  // a sender waiting for an announcement
  if (server_) server_->Shutdown();
  server_.reset();
  // The store and member stay alive until a running update lets go of them.
  store_.reset();
  member_.reset();
  stats_.state = updating_ ? "updating" : "uninitialized";
}

bool Broadcaster::Abort() {
  std::shared_ptr<KeyValueStore> store;
  uint32_t rank = 0;
  {
    absl::MutexLock lock(&mu_);
    if (updating_ && initialized_) store = store_;
    rank = config_.sender_rank;
  }
  // A planned stop mid-update, joined yet or not: the peers learn it now
  // rather than at their timeout (bounded: the rendezvous may be gone).
  if (store != nullptr) {
    (void)MarkAnnouncedGenerationBroken(
        *store, absl::StrCat("sender ", rank, " stopped (abort or shutdown)"),
        absl::Now() + absl::Seconds(1));
  }
  absl::MutexLock lock(&mu_);
  const bool running = updating_;
  Teardown();
  return running;
}

uint32_t Broadcaster::rendezvous_port() const {
  absl::MutexLock lock(&mu_);
  return config_.port;
}

}  // namespace weightcast

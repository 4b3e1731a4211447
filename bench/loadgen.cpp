// A ghz-style load generator in C++ for the scale-out benchmark: a Python client costs 0.2-0.6 ms
// of CPU per call, as much as the server it measures, and on a 2-core machine it takes the cores
// the servers need. This one sends ready-made request bytes to any unary method through grpc++'s
// generic stub (no generated code), keeps `concurrency` calls in flight, each on a connection of
// its own (SO_REUSEPORT spreads connections, not calls), and prints one JSON line:
// p50/p99 latency, QPS, errors and its own CPU per call.
//
//   loadgen TARGET METHOD PAYLOADS CONCURRENCY TOTAL
// PAYLOADS: a file of [uint32 little-endian length][bytes] records.
// Build: g++ -O2 -std=c++17 bench/loadgen.cpp $(pkg-config --cflags --libs grpc++) (Debian libgrpc++-dev).

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using Clock = std::chrono::steady_clock;

struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  Clock::time_point start;
  int slot = 0;
};

static double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s TARGET METHOD PAYLOADS CONCURRENCY TOTAL\n", argv[0]);
    return 2;
  }
  const std::string target = argv[1], method = argv[2];
  const int conc = std::stoi(argv[4]);
  const long total = std::stol(argv[5]);
  std::vector<grpc::ByteBuffer> payloads;
  {
    std::ifstream f(argv[3], std::ios::binary);
    uint32_t n = 0;
    while (f.read(reinterpret_cast<char*>(&n), 4)) {
      std::string b(n, '\0');
      f.read(b.data(), n);
      grpc::Slice s(b);
      payloads.emplace_back(&s, 1);
    }
  }
  if (payloads.empty()) {
    std::fprintf(stderr, "no payloads in %s\n", argv[3]);
    return 2;
  }
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < conc; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // a connection per caller
    channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(std::make_unique<grpc::GenericStub>(channels.back()));
  }
  for (auto& ch : channels)
    ch->WaitForConnected(gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN)));
  grpc::CompletionQueue cq;
  long started = 0, done = 0, errors = 0;
  std::vector<double> lat;
  lat.reserve(total);
  auto launch = [&](int slot) {
    auto* c = new Call;
    c->slot = slot;
    c->start = Clock::now();
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    c->reader = stubs[slot]->PrepareUnaryCall(&c->ctx, method, payloads[started % payloads.size()], &cq);
    c->reader->StartCall();
    c->reader->Finish(&c->response, &c->status, c);
    ++started;
  };
  const double cpu0 = cpu_seconds();
  const auto t0 = Clock::now();
  for (int i = 0; i < conc && started < total; ++i) launch(i);
  void* tag;
  bool ok;
  while (done < total && cq.Next(&tag, &ok)) {
    auto* c = static_cast<Call*>(tag);
    lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c->start).count());
    if (!ok || !c->status.ok()) ++errors;
    ++done;
    const int slot = c->slot;
    delete c;
    if (started < total) launch(slot);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
  std::printf("{\"p50_us\": %.1f, \"p99_us\": %.1f, \"qps\": %.1f, \"errors\": %ld, \"client_cpu_us\": %.1f}\n",
              pct(0.50), pct(0.99), done / secs, errors, 1e6 * cpu / done);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return errors ? 1 : 0;
}

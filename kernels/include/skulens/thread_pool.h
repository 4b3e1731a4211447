// A small work-sharing pool. run(n, fn) calls fn(0..n-1) across the pool and
// the calling thread; the caller takes tasks too, so nested or concurrent
// callers never deadlock waiting for busy workers.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace skulens {

class ThreadPool {
 public:
  static ThreadPool& global() {
    static ThreadPool pool;
    return pool;
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void run(size_t n, const std::function<void(size_t)>& fn) {
    if (n == 0) return;
    if (n == 1) {
      fn(0);
      return;
    }
    ensure_workers(n - 1);
    auto job = std::make_shared<Job>(fn, n);
    {
      std::lock_guard<std::mutex> g(mu_);
      for (size_t i = 0; i + 1 < n; ++i) queue_.push_back(job);
    }
    for (size_t i = 0; i + 1 < n; ++i) cv_.notify_one();
    job->work();
    std::unique_lock<std::mutex> lk(job->mu);
    job->cv.wait(lk, [&] { return job->done.load() == job->n; });
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  struct Job {
    Job(const std::function<void(size_t)>& f, size_t count) : fn(f), n(count) {}
    const std::function<void(size_t)>& fn;  // outlives the job: run() waits
    const size_t n;
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
    std::exception_ptr error;

    void work() {
      for (size_t i; (i = next.fetch_add(1)) < n;) {
        try {
          fn(i);
        } catch (...) {
          std::lock_guard<std::mutex> g(mu);
          if (!error) error = std::current_exception();
        }
        if (done.fetch_add(1) + 1 == n) {
          std::lock_guard<std::mutex> g(mu);
          cv.notify_all();
        }
      }
    }
  };

  void ensure_workers(size_t want) {
    want = want > kMaxWorkers ? kMaxWorkers : want;
    std::lock_guard<std::mutex> g(mu_);
    while (workers_.size() < want) workers_.emplace_back([this] { loop(); });
  }

  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->work();
    }
  }

  static constexpr size_t kMaxWorkers = 255;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

}  // namespace skulens

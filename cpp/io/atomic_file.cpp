// Atomic file writes: a temporary file beside the target, fsync, rename over it, fsync the directory.
#include "cpp/io/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "ember/error.h"
#include "ember/io.h"

namespace ember::io {

void write_bytes(std::FILE* f, const void* data, size_t n) {
  if (n == 0) return;
  errno = 0;
  const size_t written = std::fwrite(data, 1, n, f);
  if (written != n) {
    const int err = errno;
    throw Error(ember::detail::str_cat("write of ", n, " bytes failed after ", written,
                                       " bytes: ", err ? std::strerror(err) : "stream error"));
  }
}

namespace detail {

namespace {

// The directory holding `path`, for the fsync that makes the rename durable.
std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The same directory as the target, so rename() stays within one filesystem and is atomic; the
// pid and a counter keep concurrent writers (other processes, other threads) from sharing a file.
std::string temp_path(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return ember::detail::str_cat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
}

// "<pid>.<n>" with both all digits: the tail temp_path() puts after "<target>.tmp.".
bool parse_temp_tail(const std::string& tail, long long& pid) {
  const size_t dot = tail.find('.');
  if (dot == 0 || dot == std::string::npos || dot + 1 == tail.size() || dot > 9) return false;
  for (size_t i = 0; i < tail.size(); ++i)
    if (i != dot && (tail[i] < '0' || tail[i] > '9')) return false;
  pid = std::stoll(tail.substr(0, dot));
  return pid > 0;
}

}  // namespace

void remove_stale_temps(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string prefix = base + ".tmp.";
  DIR* dir = ::opendir(parent_dir(path).c_str());
  if (!dir) return;  // best effort: the write itself reports a directory it cannot use
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    long long pid = 0;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
        !parse_temp_tail(name.substr(prefix.size()), pid) || pid == ::getpid())
      continue;
    // Only a writer that is gone: kill(pid, 0) fails with ESRCH when no process has that id (a
    // live one, or one we may not signal, keeps its file). Only regular files, never followed links.
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    ::unlinkat(::dirfd(dir), e->d_name, 0);
  }
  ::closedir(dir);
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer, const char* who) {
  // A writer killed mid-save leaves its temporary behind; each later save of the same target
  // removes those of processes that no longer exist.
  remove_stale_temps(path);
  const std::string tmp = temp_path(path);
  const std::string prefix = ember::detail::str_cat(who, ": cannot write '", path, "': ");
  const std::string unchanged = ember::detail::str_cat(" (temporary file removed; '", path, "' left unchanged)");

  // O_EXCL: never write into a file someone else created under the same name.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    throw Error(ember::detail::str_cat(prefix, "creating temporary file '", tmp, "' failed: ", std::strerror(err)));
  }
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(ember::detail::str_cat(prefix, "fdopen of temporary file '", tmp, "' failed: ", std::strerror(err)));
  }

  // Every failure from here on closes and removes the temporary file before throwing; errno is
  // captured first because fclose/unlink may overwrite it.
  auto abandon = [&] {
    if (f) std::fclose(f);
    f = nullptr;
    ::unlink(tmp.c_str());
  };
  auto fail = [&](const char* step) {
    const int err = errno;
    abandon();
    throw Error(ember::detail::str_cat(prefix, step, " temporary file '", tmp,
                                       "' failed: ", err ? std::strerror(err) : "stream error", unchanged));
  };

  try {
    writer(f);
  } catch (const Error& e) {
    abandon();
    throw Error(ember::detail::str_cat(prefix, e.what(), unchanged));
  } catch (...) {
    abandon();
    throw;
  }
  // A writer that used plain fwrite without checking leaves the sticky error flag set.
  errno = 0;
  if (std::ferror(f)) fail("writing");
  if (std::fflush(f) != 0) fail("flushing");
  // Without fsync a crash after the rename could leave `path` naming a file whose data never
  // reached the disk: the rename must not become durable before the bytes do.
  if (::fsync(::fileno(f)) != 0) fail("fsync of");
  const int close_rc = std::fclose(f);
  f = nullptr;
  if (close_rc != 0) fail("closing");
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(ember::detail::str_cat(prefix, "renaming temporary file '", tmp,
                                       "' over it failed: ", std::strerror(err), unchanged));
  }

  // The new directory entry is only durable once the directory itself is synced. The file is
  // complete and in place by now, so a failure here reports durability, not a torn file.
  const std::string dir = parent_dir(path);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    const int err = errno;
    throw Error(ember::detail::str_cat(prefix, "the file was written, but opening directory '", dir,
                                       "' to fsync the rename failed: ", std::strerror(err)));
  }
  // Some filesystems do not support fsync on directories (EINVAL); there is nothing more to do.
  if (::fsync(dfd) != 0 && errno != EINVAL) {
    const int err = errno;
    ::close(dfd);
    throw Error(ember::detail::str_cat(prefix, "the file was written, but fsync of directory '", dir,
                                       "' failed: ", std::strerror(err)));
  }
  ::close(dfd);
}

}  // namespace detail

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  detail::write_file_atomic(path, writer, "write_file_atomic");
}

}  // namespace ember::io

// Opening files for reading: non-blocking open, then the file type check, then a stdio stream.
#include "cpp/io/read_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ember/error.h"

namespace ember::io::detail {

namespace {
const char* file_kind(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a plain file";
}
}  // namespace

std::FILE* open_regular_file(const std::string& path, const std::string& who, const char* expected, uint64_t& size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever. The type is
  // checked on the descriptor itself, so nothing can swap the file between the check and the read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw Error(ember::detail::str_cat(who, ": cannot open: ", std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ember::detail::str_cat(who, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ember::detail::str_cat(who, ": not a regular file (", file_kind(st.st_mode), "), expected ", expected));
  }
  // Reads of a regular file never block; the flag is cleared so stdio sees an ordinary descriptor.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ember::detail::str_cat(who, ": fcntl failed: ", std::strerror(err)));
  }
  std::FILE* f = ::fdopen(fd, "rb");
  if (!f) {
    const int err = errno;
    ::close(fd);
    throw Error(ember::detail::str_cat(who, ": fdopen failed: ", std::strerror(err)));
  }
  size = static_cast<uint64_t>(st.st_size);
  return f;
}

}  // namespace ember::io::detail

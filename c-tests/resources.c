/* What the library asks of its host (issue 11): a geometry that would make it allocate
 * absurd buffers is refused before anything is written, and a thread the host refuses is
 * RB_E_NO_MEMORY, with no thread left running and nothing printed on the host's stderr. */
#include "test.h"

#include <time.h>

#include <dirent.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define NOBODY 65534
#define NPROC_LIMIT 32

static int tasks(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Before: accepted, the superblock written, then a 128 GiB io_uring arena and SIGABRT. */
/* The thread count once it settles at `want` (up to 2 s): a joined thread's /proc entry goes
 * a moment after join returns. */
static int tasks_settle(int want) {
    for (int i = 0; i < 200; i++) {
        if (tasks() == want) return want;
        struct timespec ms = {0, 10000000};
        nanosleep(&ms, NULL);
    }
    return tasks();
}

static int test_a_1_gib_header_is_refused_before_anything_is_written(void) {
    char path[512];
    test_path(path, sizeof path, "resources-header");
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE;
    o.engine = RB_ENGINE_IO_URING;
    o.capacity_bytes = 64ull << 30;
    o.header_bytes = 1u << 30;
    o.slot_bytes = 2ull << 30;
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open(path, &o, &dev), RB_E_INVALID_ARGUMENT);
    CHECK(strstr(rb_last_error_message(), "header_bytes 1073741824 exceeds the maximum of 1048576") != NULL,
          "the message names the field and its value: %s", rb_last_error_message());
    CHECK(dev == NULL && file_size(path) == -1, "nothing was left: the file it would have created does not exist");
    CHECK_STATUS(rb_open(path, NULL, &dev), RB_E_IO);
    unlink(path);
    return test_result();
}

/* The child: an unprivileged user under RLIMIT_NPROC, stderr in a file the parent reads. */
static int thread_limit_child(const char *path, const char *err_path) {
    int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0 || dup2(fd, 2) < 0) return 2;
    close(fd);
    struct rlimit lim = {NPROC_LIMIT, NPROC_LIMIT};
    if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0 || setrlimit(RLIMIT_NPROC, &lim) != 0) {
        printf("FAIL cannot become uid %d under RLIMIT_NPROC %d: %s\n", NOBODY, NPROC_LIMIT, strerror(errno));
        return 2;
    }
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
    o.engine = RB_ENGINE_POSIX;
    o.posix_threads = 256;
    o.capacity_bytes = 64 << 20;
    o.slot_bytes = 64 << 10;
    int before = tasks();
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open(path, &o, &dev), RB_E_NO_MEMORY);
    CHECK(strstr(rb_last_error_message(), "could not start POSIX engine thread") != NULL, "says which thread: %s",
          rb_last_error_message());
    CHECK(tasks_settle(before) == before, "no thread left running (%d before, %d after)", before, tasks());
    CHECK(dev == NULL && file_size(path) == -1, "nothing was formatted: the file it would have created does not exist");
    CHECK(strcmp(rb_status_str(RB_E_NO_MEMORY), "unknown status") != 0, "RB_E_NO_MEMORY: %s",
          rb_status_str(RB_E_NO_MEMORY));
    o.posix_threads = 4;
    CHECK_OK(rb_open(path, &o, &dev));
    CHECK(tasks() == before + 4, "four workers with posix_threads = 4 (%d)", tasks());
    CHECK_OK(rb_close(dev));
    CHECK(tasks_settle(before) == before, "joined at close (%d)", tasks());
    fflush(stdout);
    return test_result();
}

/* Before: RB_E_PANIC, a panic message and backtrace on stderr, and 31 threads left running. */
static int test_a_refused_thread_is_a_status_and_nothing_on_stderr(void) {
    if (geteuid() != 0) {
        SKIP("not root, so the child cannot become an unprivileged user (RLIMIT_NPROC does not bind root)");
    }
    char dir[512], path[600], err_path[600];
    test_path(dir, sizeof dir, "resources-nproc");
    mkdir(dir, 0777);
    chmod(dir, 0777); /* past the umask: the child writes here as nobody */
    snprintf(path, sizeof path, "%s/dev.img", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(thread_limit_child(path, err_path));
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child passed (wait status %#x)", status);
    off_t printed = file_size(err_path);
    CHECK(printed == 0, "the library printed nothing on stderr (%lld bytes)", (long long)printed);
    if (printed > 0) {
        char buf[4096] = {0};
        int fd = open(err_path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : 0;
        printf("  stderr was: %.*s\n", (int)(n > 0 ? n : 0), buf);
        if (fd >= 0) close(fd);
    }
    unlink(path);
    unlink(err_path);
    rmdir(dir);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_a_1_gib_header_is_refused_before_anything_is_written);
    RUN(test_a_refused_thread_is_a_status_and_nothing_on_stderr);
    return test_finish("resources");
}

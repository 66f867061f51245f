/* Inject N records into /dev/kmsg at a target rate, one write() per record.
 *
 *   inject TAG COUNT RATE_PER_S [PATH]
 *
 * Each record is "<14>TAG-%08d\n" (user.info, numbered from 0). Pacing busy-waits on
 * CLOCK_MONOTONIC every CHUNK records, so the rate holds from 30k/s to over 1M/s without
 * the wake-up jitter of sleeping. Needs kernel.printk_devkmsg=on (else the kernel drops
 * all but 10 records per 5 s of one open file). Prints "written elapsed_s" on stdout.
 *
 * Built with -DSLEEP_BETWEEN_GROUPS it sleeps (clock_nanosleep to the group's due time)
 * instead of spinning, so a sustained flood leaves the second core to the readers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TAG COUNT RATE_PER_S [PATH]\n", argv[0]);
        return 2;
    }
    const char *tag = argv[1];
    long count = atol(argv[2]);
    double rate = atof(argv[3]);
    const char *path = argc > 4 ? argv[4] : "/dev/kmsg";
    if (count <= 0 || rate <= 0 || strlen(tag) > 200) {
        fprintf(stderr, "inject: bad arguments\n");
        return 2;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "inject: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char line[256];
    long written = 0;
    double start = now_s();
    for (long i = 0; i < count; i++) {
        if (i % CHUNK == 0) {
            double due = start + (double)i / rate;
#ifdef SLEEP_BETWEEN_GROUPS
            double ahead = due - now_s();
            if (ahead > 0) {
                struct timespec pause = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
                nanosleep(&pause, NULL);
            }
#else
            while (now_s() < due) {
            }
#endif
        }
        int len = snprintf(line, sizeof line, "<14>%s-%08ld\n", tag, i);
        if (write(fd, line, (size_t)len) != len) {
            fprintf(stderr, "inject: write %ld failed: %s\n", i, strerror(errno));
            break;
        }
        written++;
    }
    double elapsed = now_s() - start;
    close(fd);
    printf("%ld %.6f\n", written, elapsed);
    return written == count ? 0 : 1;
}

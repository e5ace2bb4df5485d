/* olci-calibrate: Level-0 counts to Level-1 radiance, radiance = counts * gain + offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int number(const char *text, double *value)
{
    char *end;
    *value = strtod(text, &end);
    return end != text && *end == '\0';
}

int main(int argc, char **argv)
{
    double gain, offset, counts;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("olci-calibrate %s\n", VERSION);
        return 0;
    }
    if (argc < 4 || !number(argv[1], &gain) || !number(argv[2], &offset)) {
        fprintf(stderr, "usage: olci-calibrate GAIN OFFSET COUNTS...\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (!number(argv[i], &counts)) {
            fprintf(stderr, "olci-calibrate: not a number: %s\n", argv[i]);
            return 2;
        }
        printf("%.4f\n", counts * gain + offset);
    }
    return 0;
}

/* vis-calibrate RAW BIAS FLAT OUT GAIN: the first step of the VIS demo pipeline.
 * Removes the bias, divides by the flat field and converts ADU to electrons:
 *     e = (raw - bias) / flat * gain
 * Frames are text: a "# vis-frame WIDTH HEIGHT" line, then HEIGHT rows of WIDTH numbers.
 * Exit 0 done, 1 a frame could not be read or written, 2 bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int width, height;
    double *pixels;
} frame;

static int read_frame(const char *path, frame *f) {
    FILE *in = fopen(path, "r");
    if (!in) {
        perror(path);
        return 0;
    }
    int ok = fscanf(in, "# vis-frame %d %d", &f->width, &f->height) == 2 && f->width > 0 && f->height > 0 &&
             f->width <= 65536 && f->height <= 65536;
    size_t n = ok ? (size_t)f->width * (size_t)f->height : 0;
    f->pixels = ok ? malloc(n * sizeof(double)) : NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = f->pixels && fscanf(in, "%lf", &f->pixels[i]) == 1;
    fclose(in);
    if (!ok)
        fprintf(stderr, "vis-calibrate: %s is no vis-frame\n", path);
    return ok;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("vis-calibrate %s\n", VERSION);
        return 0;
    }
    char *end;
    double gain = argc == 6 ? strtod(argv[5], &end) : 0;
    if (argc != 6 || *end != '\0' || gain <= 0) {
        fprintf(stderr, "usage: vis-calibrate RAW BIAS FLAT OUT GAIN (GAIN in e-/ADU, > 0)\n");
        return 2;
    }
    frame raw, bias, flat;
    if (!read_frame(argv[1], &raw) || !read_frame(argv[2], &bias) || !read_frame(argv[3], &flat))
        return 1;
    if (bias.width != raw.width || bias.height != raw.height || flat.width != raw.width ||
        flat.height != raw.height) {
        fprintf(stderr, "vis-calibrate: the bias and flat frames must be %dx%d like the raw frame\n", raw.width,
                raw.height);
        return 1;
    }
    FILE *out = fopen(argv[4], "w");
    if (!out) {
        perror(argv[4]);
        return 1;
    }
    fprintf(out, "# vis-frame %d %d\n", raw.width, raw.height);
    double sum = 0, peak = 0;
    for (int y = 0; y < raw.height; y++) {
        for (int x = 0; x < raw.width; x++) {
            size_t i = (size_t)y * raw.width + x;
            double e = flat.pixels[i] > 0 ? (raw.pixels[i] - bias.pixels[i]) / flat.pixels[i] * gain : 0;
            sum += e;
            peak = e > peak ? e : peak;
            fprintf(out, x ? " %.3f" : "%.3f", e);
        }
        fputc('\n', out);
    }
    if (fclose(out) != 0) {
        perror(argv[4]);
        return 1;
    }
    printf("vis-calibrate: %dx%d frame, mean %.3f e-, peak %.3f e-\n", raw.width, raw.height,
           sum / ((double)raw.width * raw.height), peak);
    return 0;
}

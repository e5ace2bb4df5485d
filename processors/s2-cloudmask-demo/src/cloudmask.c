/* cloudmask: the fraction of pixels whose blue reflectance exceeds a threshold, counted with OpenMP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIXELS 1000000

int main(int argc, char **argv)
{
    static double blue[MAX_PIXELS];
    long n = 0, cloudy = 0;
    char *end;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("cloudmask %s\n", VERSION);
        return 0;
    }
    double threshold = argc == 2 ? strtod(argv[1], &end) : -1;
    if (argc != 2 || *end != '\0' || threshold < 0) {
        fprintf(stderr, "usage: cloudmask THRESHOLD < reflectances\n");
        return 2;
    }
    while (n < MAX_PIXELS && scanf("%lf", &blue[n]) == 1)
        n++;
    if (n == 0) {
        fprintf(stderr, "cloudmask: no reflectance read\n");
        return 1;
    }
#pragma omp parallel for reduction(+ : cloudy)
    for (long i = 0; i < n; i++)
        cloudy += blue[i] > threshold;
    printf("pixels: %ld, cloudy: %ld, cloud fraction: %.2f\n", n, cloudy, (double)cloudy / n);
    return 0;
}

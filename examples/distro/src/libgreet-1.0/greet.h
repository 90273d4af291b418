#ifndef GREET_H
#define GREET_H
/* Prints a greeting for `who`; returns 0 on success. */
int greet(const char *who);
#endif

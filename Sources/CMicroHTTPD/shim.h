#ifndef CMICROHTTPD_SHIM_H
#define CMICROHTTPD_SHIM_H
// microhttpd.h expects the platform's socket types to be declared before it.
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>
#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Monotonic and wall-clock time in milliseconds. */
#ifndef SLB_CORE_TIME_H
#define SLB_CORE_TIME_H

#include <stdint.h>

uint64_t slb_mono_ms(void);
uint64_t slb_mono_us(void);
uint64_t slb_wall_ms(void);

#endif

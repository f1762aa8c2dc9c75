/*
 * hello: the HCR test unikernel.
 *
 * Prints its command line (taken from the PVH start info) on COM1 and ends
 * the VM through QEMU's isa-debug-exit device with the code given as
 * `exit=<0..127>` on that command line; QEMU then exits with status
 * (code << 1) | 1. Without `exit=` it idles with interrupts off, so the
 * runtime has a running guest to stop, inspect and kill. Application
 * arguments `echo WORDS...` (after `--`) print WORDS and exit 0, so the image
 * can stand in for a container running echo.
 */
#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define HVM_START_MAGIC 0x336ec578u

/* struct hvm_start_info from Xen's public/arch-x86/hvm/start_info.h (version 0 prefix). */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
};

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* no interrupts */
	outb(COM1 + 3, 0x80); /* DLAB on */
	outb(COM1 + 0, 0x01); /* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03); /* 8N1, DLAB off */
	outb(COM1 + 2, 0xc7); /* FIFO on, cleared */
}

static void putc_serial(char c)
{
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		; /* wait for an empty transmit holding register */
	outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
	for (; *s; s++) {
		if (*s == '\n')
			putc_serial('\r');
		putc_serial(*s);
	}
}

static void putu(uint32_t v)
{
	char buf[11];
	int i = sizeof buf - 1;
	buf[i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	puts_serial(&buf[i]);
}

/* Finds `exit=<digits>` as a whole word; returns -1 when absent or malformed. */
static int32_t exit_code(const char *cmdline)
{
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *w = p;
		while (*p && *p != ' ')
			p++;
		if (p - w > 5 && w[0] == 'e' && w[1] == 'x' && w[2] == 'i' && w[3] == 't' && w[4] == '=') {
			uint32_t v = 0;
			const char *d = w + 5;
			for (; d < p; d++) {
				if (*d < '0' || *d > '9' || v > 1000)
					return -1;
				v = v * 10 + (uint32_t)(*d - '0');
			}
			return (int32_t)v;
		}
	}
	return -1;
}

/*
 * Next word of a command line, as Linux and Unikraft split it: a run of
 * non-spaces, or a double-quoted run (quotes dropped). Sets *len and returns
 * its start, or 0 at the end; *p moves past the word.
 */
static const char *next_word(const char **p, uint32_t *len)
{
	const char *s = *p;
	while (*s == ' ')
		s++;
	if (*s == '\0')
		return 0;
	const char *w = s;
	if (*s == '"') {
		w = ++s;
		while (*s && *s != '"')
			s++;
		*len = (uint32_t)(s - w);
		if (*s == '"')
			s++;
	} else {
		while (*s && *s != ' ')
			s++;
		*len = (uint32_t)(s - w);
	}
	*p = s;
	return w;
}

static int word_is(const char *w, uint32_t len, const char *lit)
{
	uint32_t i = 0;
	for (; i < len && lit[i]; i++)
		if (w[i] != lit[i])
			return 0;
	return i == len && lit[i] == '\0';
}

/*
 * When the application's arguments (the words after `--`) are `echo ...`,
 * prints the rest as echo would — one space between words, then a newline —
 * so this image can stand in for a container running echo (critest's log
 * specs). Returns 1 when it echoed.
 */
static int echo_args(const char *cmdline)
{
	const char *p = cmdline;
	const char *w;
	uint32_t len;
	while ((w = next_word(&p, &len)) != 0 && !word_is(w, len, "--"))
		;
	if (w == 0 || (w = next_word(&p, &len)) == 0 || !word_is(w, len, "echo"))
		return 0;
	int first = 1;
	while ((w = next_word(&p, &len)) != 0) {
		if (!first)
			putc_serial(' ');
		first = 0;
		for (uint32_t i = 0; i < len; i++)
			putc_serial(w[i]);
	}
	putc_serial('\n');
	return 1;
}

void hello_main(const struct hvm_start_info *si)
{
	serial_init();
	puts_serial("hello from the HCR test unikernel\n");
	const char *cmdline = "";
	if (si->magic != HVM_START_MAGIC)
		puts_serial("warning: no PVH start info (bad magic)\n");
	else if (si->cmdline_paddr != 0)
		cmdline = (const char *)(uintptr_t)si->cmdline_paddr;
	puts_serial("cmdline: ");
	puts_serial(cmdline);
	puts_serial("\n");

	int32_t code = echo_args(cmdline) ? 0 : exit_code(cmdline);
	if (code < 0) {
		puts_serial("no exit=<0..127> on the command line; idling\n");
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	if (code > 127) {
		puts_serial("exit code above 127 cannot be reported ((code << 1) | 1 must fit a byte); using 127\n");
		code = 127;
	}
	puts_serial("exiting with code ");
	putu((uint32_t)code);
	puts_serial("\n");
	outl(DEBUG_EXIT_PORT, (uint32_t)code);
	puts_serial("isa-debug-exit is not present; halting\n");
}

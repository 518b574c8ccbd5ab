#!/usr/bin/perl

# Hostile clients on the sync port (issue 13): a client that never reads
# its acknowledgements cannot grow the node's memory, one that trickles
# its HELLO is closed after zone_sync_timeout, HELLOs from anyone cannot
# make the node reconnect in a storm, a peer's ERROR text is escaped in
# the log, and strangers cannot fill the log with errors.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time sleep/;

use FindBin;
use lib "$FindBin::Bin/lib";

use Errno qw/EAGAIN EWOULDBLOCK/;
use IO::Select;
use IO::Socket::INET;
use Socket qw/SOL_SOCKET SO_RCVBUF IPPROTO_TCP TCP_NODELAY/;

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::ZoneSync qw/:all/;

###############################################################################

my $c = Test::Nginx::Cluster->new(1)->has(qw/http stream zone_sync/)->plan(8);
my $d = $c->testdir;
my $closing = port(8090);

# node 0 also has a peer on $closing that accepts and closes at once, and
# retries it only every 30 s
$c->write_file_expand(<<"EOF");

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_server 127.0.0.1:$closing;
        zone_sync_connect_retry_interval 30s;
        zone_sync_timeout 1s;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval \$arg_k \$hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set \$hv \$arg_v; return 200 "ok"; }
        location /get { return 200 "[\$hv]"; }
    }
}

EOF

$c->run_daemon(\&closing_daemon, $closing, "$d/accepts");
$c->node(0)->waitforsocket("127.0.0.1:$closing");

$c->ignore_log(qr/protocol error|closed by peer|timed out|no hello/);
$c->run();

###############################################################################

sub log_of { $c->node(0)->read_file('error.log') // '' }
sub accepts { -s "$d/accepts" // 0 }

sub client {
	my (%o) = @_;
	my $s = IO::Socket::INET->new(Proto => 'tcp');
	setsockopt($s, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) if $o{rcvbuf};
	$s->connect(Socket::pack_sockaddr_in($c->sync_port(0),
		Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
	return $s;
}

# waits until the node closes $s (EOF or reset); false if it stays open
sub closed_within {
	my ($s, $secs) = @_;
	my $sel = IO::Select->new($s);
	my $end = time() + $secs;
	while ((my $left = $end - time()) > 0) {
		next unless $sel->can_read($left);
		my $n = sysread($s, my $buf, 65536);
		return 1 if !$n;
	}
	return 0;
}

my $hello = zs_hello(0x1234567, ['h', 1, 1]);

ok(wait_for(sub { accepts() >= 1 }, timeout => 5), 'closing peer tried');

# a node connecting to us brings our retry forward, but a flood of HELLOs
# does not make us reconnect for each: at most once a second

my $before = accepts();
my $t0 = time();
for (1 .. 40) {
	my $s = client();
	$s->syswrite($hello);
	sleep(0.05);
	close $s;
}
my $flood = time() - $t0;
sleep(0.5);
my $n = accepts() - $before;
ok($n >= 1 && $n <= int($flood) + 3,
	"a HELLO flood brings retries forward at most once a second ($n in "
	. sprintf('%.1f s)', $flood));

# strangers' malformed connections: one error line, the rest at info

my $offset = length log_of();
for (1 .. 30) {
	my $s = client();
	$s->syswrite("GET / HTTP/1.0\r\n\r\n" x 4);
	closed_within($s, 2);
}
my $since = substr(log_of(), $offset);
my $errors = () = $since =~ /\[error\].*zone_sync: node 127\.0\.0\.1: protocol error/g;
my $infos = () = $since =~ /\[info\].*zone_sync: node 127\.0\.0\.1: protocol error/g;
ok($errors <= 1 && $errors + $infos == 30,
	"strangers' errors rate-limited ($errors at error, $infos at info)");

# a peer's ERROR text is escaped: it cannot forge log lines

$offset = length log_of();
my $s = client();
$s->syswrite($hello . zs_error(4, "bad\n2026/01/01 00:00:00 [notice] forged"));
closed_within($s, 2);
ok(wait_for(sub { substr(log_of(), $offset) =~ /closed by peer: .* bad\\x0a2026/ },
	timeout => 5), 'ERROR text logged escaped');
unlike(log_of(), qr/^2026\/01\/01 00:00:00 \[notice\] forged/m, 'no forged line');

# a HELLO trickled a byte at a time is cut off after zone_sync_timeout

$s = client();
my $trickle = time();
my $cut = 0;
for my $i (0 .. length($hello) - 2) {
	last unless defined $s->syswrite(substr($hello, $i, 1));
	if (closed_within($s, 0.2)) {
		$cut = 1;
		last;
	}
}
my $took = time() - $trickle;
ok($cut && $took < 3, sprintf('trickled HELLO cut off after %.1f s', $took));

# a client that sends frames and never reads its ACKs: the node stops
# reading once its output is full, and drops the connection

$offset = length log_of();
$s = client(rcvbuf => 2048);
setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
$s->syswrite($hello);
$s->blocking(0);
my $seq = 0;
my $sending = time();
my $dropped = 0;
while (time() < $sending + 20) {
	my $f = zs_records(seq => $seq + 1, zone => 'zz', records => []);
	my $w = syswrite($s, $f);
	if (defined $w) {
		die "partial write" if $w != length $f;
		$seq++;
		# one frame per read of the node: one ACK each
		sleep(0.0002);
		next;
	}
	if ($! == EAGAIN || $! == EWOULDBLOCK) {
		last if $dropped = substr(log_of(), $offset)
			=~ /zone_sync: node 127\.0\.0\.1: (send )?timed out/;
		sleep(0.05);
		next;
	}
	$dropped = 1;
	last;
}
ok($dropped, sprintf('client not reading its ACKs dropped while sending'
	. ' (%d frames in %.1f s)', $seq, time() - $sending));
close $s;

# and the node still works

$c->http_get(0, '/set?k=after&v=fine');
like($c->http_get(0, '/get?k=after'), qr/\[fine\]/, 'node still serving');

###############################################################################

sub closing_daemon {
	my ($port, $file) = @_;
	my $server = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
		Listen => 16, ReuseAddr => 1)
		or die "cannot listen on $port: $!\n";

	while (my $client = $server->accept()) {
		close $client;
		open my $fh, '>>', $file or die "$file: $!\n";
		print $fh 'x';
		close $fh;
	}
}

###############################################################################

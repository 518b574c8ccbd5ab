#!/usr/bin/perl

# The sync engine under faults: hostile or broken input on the sync port,
# a peer that accepts but never answers, a killed syncing worker, a reload
# under writes, QUIT with records pending, and a node whose clock runs an
# hour fast.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use IO::Select;
use Socket qw/ SOL_SOCKET SO_REUSEADDR /;

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::ZoneSync qw/zs_frame zs_hello_body zs_record zs_records_body/;

###############################################################################

my $faketime = (grep { -e } glob('/usr/lib/*/faketime/libfaketime.so.1'))[0];

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream zone_sync/)->plan(18);

# node 0 also talks to a silent peer on port 8090 (accepts, never answers)
$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval @INTERVAL@;
        zone_sync_connect_retry_interval 200ms;
        zone_sync_timeout 1s;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

# node 0 syncs at once when quiet, then coalesces for 10s: records written
# right after a first one stay pending, which the QUIT test needs
for my $i (0, 1) {
	my $conf = $c->node($i)->read_file('nginx.conf');
	my $interval = $i == 0 ? '10s' : '10ms';
	$conf =~ s/\@INTERVAL\@/$interval/;
	if ($i == 0) {
		my $silent = port(8090);
		$conf =~ s/(zone_sync;)/$1\n        zone_sync_server 127.0.0.1:$silent;/;
	}
	$c->node($i)->write_file('nginx.conf', $conf);
}

# the silent peer
my $silent = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1',
	LocalPort => port(8090), ReuseAddr => 1) or die "silent peer: $!";

$c->ignore_log(qr/protocol error|frame too large|timed out|unsupported|magic/);
$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	$c->http_get($i, "/set?k=$k&v=$v");
}

sub on {
	my ($i, $k, $v, $timeout) = @_;
	return wait_for(sub { (get($i, $k) // '') eq $v }, timeout => $timeout // 10);
}

sub log_of { $c->node($_[0])->read_file('error.log') }

sub raw {
	my ($data) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $c->sync_port(1))
		or die "connect: $!";
	$s->syswrite($data);
	my $got = '';
	my $sel = IO::Select->new($s);
	while ($sel->can_read(5)) {
		my $n = $s->sysread(my $buf, 65536);
		last unless $n;
		$got .= $buf;
	}
	return $got;
}

set(1, 'base', 'line');
ok(on(0, 'base', 'line'), 'cluster syncs');

# a peer that accepts and never answers is dropped after zone_sync_timeout

ok(wait_for(sub { log_of(0) =~ /zone_sync: node 127.0.0.1:${\port(8090)}: timed out/ },
	timeout => 10), 'silent peer dropped after zone_sync_timeout');

# hostile input on the sync port of node 1

# a HELLO offering keyval zone "h" (kind 1, version 1)
my $hello = zs_hello_body(0x1234567, ['h', 1, 1]);

raw("GET / HTTP/1.0\r\n\r\n" x 10);
ok(wait_for(sub { log_of(1) =~ /zone_sync: node .*: protocol error/ }, timeout => 5),
	'garbage: protocol error logged');

raw(pack('N', 0xffffffff) . "\x01");
ok(wait_for(sub { log_of(1) =~ /frame too large/ }, timeout => 5),
	'huge length: refused before reading it');

my $v3 = "ZSYN" . pack('n', 3) . pack('Q>', 0x1234567) . pack('n', 0);
my $answer = raw(zs_frame(1, $v3));
like($answer, qr/\x06/, 'wrong version: answered with an ERROR frame');

# a valid hello, then a RECORDS frame truncated in its record
my $zone = 'h';
my $rec = zs_record(key => 'bad', value => 'value', origin => 0x1234567);
my $records = zs_records_body(seq => 1, zone => $zone, records => [$rec]);
raw(zs_frame(1, $hello) . zs_frame(2, substr($records, 0, -3)));
raw(zs_frame(1, $hello) . pack('N', 1 + length $records) . chr(2)
	. substr($records, 0, 20));

is(get(1, 'bad'), '', 'malformed records changed nothing');
is(get(1, 'base'), 'line', 'zone intact');

# and a well-formed frame from the same raw peer is applied (the test
# above would pass vacuously otherwise)
raw(zs_frame(1, $hello) . zs_frame(2, $records));
ok(on(1, 'bad', 'value', 5), 'well-formed raw frame applied');

set(1, 'still', 'serving');
ok(on(0, 'still', 'serving'), 'node serving and syncing after hostile input');

# kill -9 of the syncing worker (worker 0): respawned, sync resumes

my ($pid) = log_of(0) =~ /(\d+)#\d+: zone_sync: settings/;
ok($pid && kill('KILL', $pid), 'syncing worker killed');
ok(wait_for(sub { my @n = log_of(0) =~ /zone_sync: settings/g; @n >= 2 },
	timeout => 10), 'worker 0 respawned');
$c->node(0)->ignore_log(qr/exited on signal 9/);
set(0, 'after', 'kill');
ok(on(1, 'after', 'kill'), 'sync resumes after the kill');

# reload under writes: nothing written during the reload is lost

for my $n (1 .. 20) {
	set(0, "r$n", "v$n");
	$c->reload_node(0, wait_old => 0) if $n == 10;
}
ok(wait_for(sub { !grep { (get(1, "r$_") // '') ne "v$_" } 1 .. 20 }, timeout => 15),
	'every write around a reload reaches the peer');

# QUIT pushes pending records. Node 1's workers are stopped: node 0's
# first record stays unacknowledged, so the link is busy and the next
# writes wait for node 0's 10 s interval; QUIT must send them anyway.

set(0, 'q0', 'first');
ok(on(1, 'q0', 'first'), 'a write on a quiet link leaves at once');
my @stopped = $c->node(1)->worker_pids;
kill 'STOP', @stopped;
set(0, 'q1', 'unacked');
set(0, 'q2', 'pending');
set(0, 'q3', 'pending');
$c->stop_node(0);
kill 'CONT', @stopped;
ok(on(1, 'q2', 'pending', 5) && on(1, 'q3', 'pending', 1),
	'QUIT flushed the pending records');
$c->start_node(0);

# clock skew: node 1 runs an hour fast; node 0 writes after seeing its write

SKIP: {
skip 'libfaketime not installed', 3 unless $faketime;

$c->stop_node(1);
{
	local $ENV{LD_PRELOAD} = $faketime;
	local $ENV{FAKETIME} = '+1h';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
	$c->start_node(1);
}

set(1, 'skew', 'fast-node');
ok(on(0, 'skew', 'fast-node'), 'write of the fast node arrives');
set(0, 'skew', 'later-write');
ok(on(1, 'skew', 'later-write'),
	'a later write of a normal node overwrites the fast node\'s');
is(get(0, 'skew'), 'later-write', 'and stays');

}

###############################################################################

#!/usr/bin/perl

# Each peer at its own pace (issue 13): a slow but live peer does not hold
# back the others, a peer that never acknowledges is dropped, and a record
# too large for this node's buffers is named in the log and skipped by the
# snapshot, which still sends every other record.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw/time/;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::ZoneSync qw/zs_fake_server/;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream unix zone_sync/)->plan(9);
my $d = $c->testdir;

# node 0: 4k buffers, and two fake nodes besides node 1: one reading 10 KB
# a second (and acknowledging what it read), one that reads everything and
# never acknowledges. Node 1: 32k buffers.
$c->write_file_expand(sub {
	my ($i) = @_;
	my $extra = $i == 0 ? <<"EOF" : "zone_sync_buffers 8 32k;\n";
zone_sync_server unix:$d/slow.sock;
        zone_sync_server unix:$d/noack.sock;
        zone_sync_recv_buffer_size 64k;
EOF
	return <<"EOF";

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        $extra
        zone_sync_interval 100ms;
        zone_sync_connect_retry_interval 500ms;
        zone_sync_timeout 2s;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    large_client_header_buffers 4 32k;

    keyval_zone zone=h:16m sync;
    keyval \$arg_k \$hv zone=h;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set \$hv \$arg_v; return 200 "ok"; }
        location /get { return 200 "[\$hv]"; }
    }
}

EOF
});

$c->run_daemon(\&zs_fake_server, "$d/slow.sock", zones => [['h', 1, 1]],
	ack => 1, read_rate => 10000, stats => "$d/slow.stats");
$c->run_daemon(\&zs_fake_server, "$d/noack.sock", zones => [['h', 1, 1]],
	ack => 0);
wait_for(sub { -S "$d/slow.sock" && -S "$d/noack.sock" }, timeout => 5);

$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/s ? $1 : undef;
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

set(0, 'a', '1');
ok(on(1, 'a', '1'), 'cluster syncs');

# a peer that reads everything and never acknowledges is dropped after
# zone_sync_timeout (it sends heartbeats: only the missing ACKs tell)

ok(wait_for(sub { log_of(0) =~ /disconnected from node unix:\S*noack\.sock: acknowledgement timed out/ },
	timeout => 10), 'peer that never acknowledges dropped');

# a record larger than node 0's buffers (written on node 1, which has larger
# ones) does not cut node 0's snapshots short

set(0, "s$_", "v$_") for 1 .. 150;
ok(on(1, 's150', 'v150'), 'small records synced');
set(1, 'big', 'x' x 20000);
ok(on(0, 'big', 'x' x 20000), 'node 0 stores the large record');

$c->stop_node(1);
$c->start_node(1);
ok(wait_for(sub { !grep { (get(1, "s$_") // '') ne "v$_" } 1 .. 150 }, timeout => 15),
	'restarted node gets every other record in the snapshot');
like(log_of(0), qr/zone_sync: record "big" of \d+ bytes in zone "h" exceeds a "zone_sync_buffers" buffer, not sent to node 127\.0\.0\.1:\d+/,
	'the record left out is named');

# a slow but live peer (10 KB a second) does not hold back node 1: with
# the slow peer's buffers full, a new write still reaches node 1 promptly

my $value = 'y' x 3000;
set(0, "f$_", $value) for 1 .. 200;
ok(on(1, 'f200', $value, 15), 'bulk writes reach node 1');
set(0, 'marker', 'm');
my $t0 = time();
my $got = on(1, 'marker', 'm', 30);
my $lag = time() - $t0;
ok($got && $lag < 4, 'a slow peer does not hold back the others')
	or diag(sprintf('marker took %.1f s', $lag));

unlike(log_of(0), qr/disconnected from node unix:\S*slow\.sock/,
	'the slow peer stays connected');

###############################################################################

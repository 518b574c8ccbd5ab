#!/usr/bin/perl

# The cluster dashboard (dashboard/index.html) in a real headless browser
# (Debian's chromium) against a live 3-node cluster: served by node 1, it
# polls every node's read-only API and shows the nodes, per-zone records
# total and pending equal to the API's; with a node stopped it shows it
# down and the others' new figures. Skipped without chromium.
#
# DASHBOARD_SCREENSHOT=docs/dashboard.png also saves a screenshot there.

use strict;
use warnings;

use Test::More;

use Cwd qw(abs_path);
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my ($chromium) = grep { -x } map { ("$_/chromium", "$_/chromium-browser") }
    split /:/, $ENV{PATH};
plan(skip_all => 'needs chromium') unless $chromium;

my $dashboard = abs_path("$FindBin::Bin/../dashboard");

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)
    ->plan(12);

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
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=sessions:1m sync;
    keyval_zone  zone=blocklist:1m sync;
    keyval       \$arg_k \$session zone=sessions;
    keyval       \$arg_k \$blocked zone=blocklist;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /api {
            api;
            add_header Access-Control-Allow-Origin * always;
        }

        location /dashboard/ {
            alias $dashboard/;
        }

        location /session { set \$session \$arg_v; return 200; }
        location /block { set \$blocked \$arg_v; return 200; }
    }
}

EOF

$c->run();

###############################################################################

my @all = (0 .. 2);

sub api {
    my ($node, $uri) = @_;
    my ($s, $d) = http_json($c->http_port($node), GET => "/api/9$uri");
    return $s == 200 ? $d : undef;
}

sub sync_of { return api($_[0], '/stream/zone_sync/') // {} }

my $url = 'http://127.0.0.1:' . $c->http_port(0) . '/dashboard/?refresh=1&api='
    . join ',', map { 'http://127.0.0.1:' . $c->http_port($_) . '/api' } @all;

my $profile = $c->testdir() . '/chromium';

# the page as the browser rendered it after $budget ms of (virtual) time:
# data-test name => text
sub dashboard {
    my ($budget, @extra) = @_;
    my @cmd = ($chromium, '--headless', '--no-sandbox', '--disable-gpu',
        "--user-data-dir=$profile", "--virtual-time-budget=$budget",
        '--window-size=1200,860', @extra);
    my $cmd = join ' ', map { "'$_'" } @cmd, $url;
    my $dom = `timeout 120 $cmd 2>/dev/null`;
    my %seen;
    $seen{$1} = $2 while $dom =~ /data-test="([^"]+)"[^>]*>([^<]*)</g;
    return \%seen;
}

ok(wait_for(sub { !grep { sync_of($_)->{status}{nodes_online} != 2 } @all }),
    'cluster up');

$c->http_get(0, "/session?k=s$_&v=user$_") for 1 .. 12;
$c->http_get(1, "/block?k=10.0.0.$_&v=1") for 1 .. 3;
ok(wait_for(sub {
    !grep { my $z = sync_of($_)->{zones};
        $z->{sessions}{records_total} != 12 || $z->{blocklist}{records_total} != 3
            || $z->{sessions}{records_pending} || $z->{blocklist}{records_pending}
    } @all
}), 'records everywhere');

my $d = dashboard(3000, '--dump-dom');
is($d->{answering}, '3 / 3', 'every node answers');
is_deeply([map { $d->{"nodes_online-$_"} } @all], [2, 2, 2],
    'peers online per node');
is_deeply([map { $d->{"state-$_"} } @all], [('in sync') x 3], 'state');

my (@want, @got);
for my $n (@all) {
    my $z = sync_of($n)->{zones};
    for my $zone (qw/sessions blocklist/) {
        for my $f (qw/records_total records_pending/) {
            push @want, "$n $zone $f $z->{$zone}{$f}";
            push @got, "$n $zone $f " . ($d->{"$f-$zone-$n"} // 'missing');
        }
    }
}
is_deeply(\@got, \@want, 'records total and pending equal the API');
like($d->{'memory-sessions-0'} // '', qr/^\s*\d+% mem$/, 'zone memory shown');

# a node down: shown down, the others' records move on

$c->stop_node(2);
ok(wait_for(sub { sync_of(0)->{status}{nodes_online} == 1 }), 'node 3 stopped');
$c->http_get(0, "/session?k=late$_&v=x") for 1 .. 5;
ok(wait_for(sub {
    !grep { sync_of($_)->{zones}{sessions}{records_total} != 17 } 0, 1
}), 'new records on the nodes up');

my @shot = $ENV{DASHBOARD_SCREENSHOT}
    ? ('--screenshot=' . abs_path('.') . "/$ENV{DASHBOARD_SCREENSHOT}") : ();
$d = dashboard(3000, '--dump-dom');
like($d->{'state-2'} // '', qr/^down/, 'the stopped node is shown down');
is_deeply([map { $d->{"records_$_-sessions-0"} } qw/total pending/],
    [map { sync_of(0)->{zones}{sessions}{"records_$_"} } qw/total pending/],
    'node 1 records equal the API');

SKIP: {
skip 'DASHBOARD_SCREENSHOT not set', 1 unless @shot;
dashboard(30000, @shot);
ok(-s $ENV{DASHBOARD_SCREENSHOT}, "screenshot in $ENV{DASHBOARD_SCREENSHOT}");
}

###############################################################################
